"""The params schema: every knob of the pipeline with its default, type and range (pydantic).

Descriptions say what a knob does and where its default was chosen, never a measured figure:
a description is written into params.yaml and its module is a dependency of every stage, so a
number that changes with every run would rerun everything.
"""
from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nightlab.config.rows import RowSelector, shared_rows

REAL_KINDS = ("cityscapes", "nightcity", "acdc", "darkzurich", "bdd100k", "folder")
SYNTHETIC = "synthetic"  # the generator's source name in the manifest


class _Strict(BaseModel):
    # strict: YAML types are kept ("0.5", true or 1 are not a float); forbid: typos are errors.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


# YAML has lists, the config keeps tuples (immutable, hashable).
Seq = Annotated[tuple, BeforeValidator(_tuple)]
Names = Annotated[tuple[str, ...], BeforeValidator(_tuple)]


PRETRAINED_HELP = ("null: from scratch; timm: timm's pretrained weights (fetched once into the Hugging Face cache, "
                   "HF_HOME); or a local checkpoint file (.pt, .pth, .safetensors)")


def _check_pretrained(value: str | None, info: ValidationInfo) -> str | None:
    """null, a file path, or ``timm`` for a backbone that timm has weights for (checked before any stage runs)."""
    if value is not None and not value.strip():
        raise ValueError("must be null, timm or a checkpoint file path (got an empty string)")
    backbone = info.data.get("backbone")  # validated before pretrained; absent if it was invalid
    if value == "timm" and backbone:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(backbone)
        if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
            arch = backbone.split(".")[0]
            raise ValueError(f"timm has no pretrained weights for backbone {backbone!r} (timm.list_pretrained("
                             f"'{arch}*') lists the tags that have them); use null or a local checkpoint file")
    return value


def _check_timm_name(name: str) -> str:
    import timm  # imported lazily: config loading must stay cheap for `--help`

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ValueError(f"unknown timm model name {name!r}{hint}")
    return name


# --------------------------------------------------------------------------------------- data

class SyntheticConfig(_Strict):
    """The built-in procedural night city (docs/design.md section 4); null: no synthetic data."""
    version: Literal[1, 2, 3] = Field(3, description="generator version: 3 the same scenes at any resolution; 2 sized "
                                      "from real street scenes and the same bits on every x86 machine; 1 the "
                                      "original (docs/design.md 4)")
    height: int = Field(512, ge=64, le=2048, description="native image height (NightCity's frames: 512)")
    width: int = Field(1024, ge=64, le=4096, description="native image width (NightCity's frames: 1024)")
    train: int = Field(160, ge=0, description="scenes in the train split; each is rendered by day and by night")
    val: int = Field(40, ge=0, description="scenes in the val split")
    test: int = Field(120, ge=0, description="scenes in the test split (held out: the headline numbers)")

    def splits(self) -> list[str]:
        """The splits the generator makes: those with at least one scene."""
        return [s for s in ("train", "val", "test") if getattr(self, s) > 0]


_NAME = re.compile(r"[A-Za-z0-9_-]+")


# The label encodings each kind can have on disk (auto: the kind's own; a folder's masks can be either).
KIND_ENCODINGS = {"cityscapes": ("auto", "labelIds", "trainIds"), "nightcity": ("auto", "labelIds"),
                  "acdc": ("auto", "labelIds"), "darkzurich": ("auto", "labelIds"), "bdd100k": ("auto", "trainIds"),
                  "folder": ("labelIds", "trainIds")}
# A split is one folder of the dataset's layout: a trailing '/' would name the same folder yet
# store a split that no source/split/domain selector matches.
_SPLIT = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


class SourceConfig(_Strict):
    """One real dataset on disk, read by its adapter (nightlab.data.adapters)."""
    kind: Literal[REAL_KINDS]  # type: ignore[valid-type]
    root: str = Field(description="dataset root; a DVC dependency of the check_source@<name> stage")
    splits: Names = Field(("train", "val"), min_length=1, description="splits to read")
    domain: Literal["auto", "day", "night"] = Field("auto", description="auto: what the adapter says")
    # validate_default: kind folder has no default encoding, so the default must be checked too.
    encoding: Literal["auto", "labelIds", "trainIds"] = Field(
        "auto", validate_default=True, description="label encoding; auto: the dataset's own (kind folder must "
        "name one)")

    @field_validator("splits")
    @classmethod
    def _split_names(cls, v):
        dup = sorted({s for s in v if v.count(s) > 1})
        if dup:
            raise ValueError(f"split(s) {dup} listed more than once")
        bad = [s for s in v if not _SPLIT.fullmatch(s)]
        if bad:
            raise ValueError(f"split(s) {bad} must be folder names of the dataset, such as 'train' or 'val' "
                             "(no '/': source/split/domain selectors go in splits.train, select, report)")
        return v

    @field_validator("encoding")
    @classmethod
    def _encoding_known(cls, v, info: ValidationInfo):
        allowed = KIND_ENCODINGS.get(info.data.get("kind"), (v,))  # no kind: its own error says so
        kind, names = info.data.get("kind"), " or ".join(allowed)
        if v == "auto" and v not in allowed:
            raise ValueError(f"kind {kind} needs encoding {names} (its masks can be either)")
        if v not in allowed:
            raise ValueError(f"kind {kind} allows encoding {names}")
        return v


class DataConfig(_Strict):
    """Where the samples come from: the synthetic generator and the real datasets of data.sources."""
    seed: int = Field(0, ge=0, description="data seed: drives the synthetic generator (training has its own seed)")
    synthetic: SyntheticConfig | None = Field(
        SyntheticConfig(), description="the procedural night city (docs/design.md 4); null: no synthetic data")
    sources: dict[str, SourceConfig] = Field(
        {}, description="real datasets by name: {kind, root, splits, domain, encoding}; one check_source@<name> "
        "stage each, whose DVC dependency is the root")
    out: str = Field("data/prepared", description="where prepare_data writes generated images and labels")
    check_workers: int = Field(2, ge=1, le=64, description="threads that open and check every sample")
    max_errors: int = Field(20, ge=1, le=10_000, description="bad files reported in one pass before stopping")

    @field_validator("sources")
    @classmethod
    def _source_names(cls, v):
        bad = [n for n in v if not _NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"source names {bad} must be letters, digits, '_' or '-' (they name files and stages)")
        return v

    @model_validator(mode="after")
    def _some_data(self):
        if self.synthetic is None and not self.sources:
            raise ValueError("no data: data.synthetic is null and data.sources is empty; name a dataset in "
                             "data.sources (e.g. nightcity: {kind: nightcity, root: /datasets/NightCity})")
        if self.synthetic is not None and SYNTHETIC in self.sources:
            raise ValueError(f"source name {SYNTHETIC!r} is the generator's (data.synthetic); rename the entry in "
                             "data.sources")
        if self.synthetic is not None and not self.synthetic.splits():
            raise ValueError("data.synthetic has 0 scenes in every split (train, val, test); set null for no "
                             "synthetic data")
        return self

    def source_names(self) -> list[str]:
        """Every source by name (the manifest's ``source`` column): the generator, then data.sources."""
        return ([] if self.synthetic is None else [SYNTHETIC]) + list(self.sources)


def _selectors(v):
    v = [v] if isinstance(v, str) else v
    if not isinstance(v, (list, tuple)) or not v:
        raise ValueError("must be a non-empty list of source/split/domain selectors")
    return tuple(s if isinstance(s, RowSelector) else RowSelector.parse(s) for s in v)


Rows = Annotated[tuple[RowSelector, ...], BeforeValidator(_selectors),
                 PlainSerializer(lambda v: [str(s) for s in v], return_type=list)]


class SplitsConfig(_Strict):
    """Manifest rows by role, as source/split/domain selectors (* matches any).

    Models train on ``train``; everything chosen (hard classes, thresholds, merge settings, criteria) is
    chosen on ``select``; headline numbers come from ``report``, held out unless ``report_on_select``.
    """
    # Not strict: selectors are parsed from strings. Defaults are validated so that they are parsed too.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True)
    train: Rows = Field(("*/train/*",), description="rows the models train on (each model narrows by train.domains)")
    select: Rows = Field(("*/val/night",), description="selection split: hard classes and every tuned knob")
    report: Rows = Field(("*/test/night",), description="report split: the headline numbers")
    report_on_select: bool = Field(False, description="allow report == select (the paper's own protocol); "
                                   "the report then says its numbers are not held out")

    @field_validator("report_on_select", mode="before")
    @classmethod
    def _bool(cls, v):
        if not isinstance(v, bool):
            raise ValueError("must be true or false")
        return v

    @model_validator(mode="after")
    def _held_out(self):
        overlap = shared_rows(self.select, self.report)
        if overlap and not self.report_on_select:
            raise ValueError(f"report rows {sorted(overlap)} are also selection rows: numbers reported there are "
                             "not held out; choose another report split, or set report_on_select: true")
        return self



# ------------------------------------------------------------------------------------- models

class BoxesConfig(_Strict):
    """Context boxes from the ground truth (docs/design.md 1.3)."""
    min_area: int = Field(48, ge=0, description="drop instances/components smaller than this (native pixels)")
    context: float = Field(0.5, ge=0.0, le=4.0, description="grow each side by this fraction of the box size")
    min_size: int = Field(48, ge=1, description="boxes are at least this wide and high after expansion")
    connectivity: Literal[4, 8] = Field(8, description="pixel connectivity of components")


def _check_crop(cls, v):
    """A training crop (h, w): each side at least the networks' coarsest stride (32)."""
    if v is not None and min(v) < 32:
        raise ValueError("each side of the crop must be at least 32 pixels")
    return v


class TrainBase(_Strict):
    """One training run (nightlab.train.fit)."""
    iters: int = Field(300, ge=1, description="optimizer steps")
    batch_size: int = Field(8, ge=1)
    lr: float = Field(0.002, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0001, ge=0.0, le=1.0)
    poly_power: float = Field(0.9, ge=0.0, le=10.0)
    ckpt_every: int = Field(100, ge=1, description="checkpoint every N steps (resume after a kill)")
    log_every: int = Field(10, ge=1)
    workers: int = Field(0, ge=0, le=64, description="data-loader worker processes")
    cache_mb: int = Field(512, ge=0, le=1_000_000, description="MiB of decoded frames kept per training process "
                          "(the first loaded; the rest decoded on demand; shared by its workers); 0: decode on demand")
    domains: Annotated[tuple[Literal["day", "night"], ...], BeforeValidator(_tuple)] = Field(
        ("day", "night"), min_length=1, description="domains of the train rows used (the paper trains night with day)")
    hflip: bool = Field(True, description="random horizontal flips")
    amp: bool = Field(True, description="bf16 autocast on GPU")


class ImageTrainConfig(TrainBase):
    crop: Annotated[tuple[int, int], BeforeValidator(_tuple)] | None = Field(
        None, description="random crop (h, w) in model input pixels; null: whole images")
    _crop = field_validator("crop")(_check_crop)


class RdnTrainConfig(TrainBase):
    iters: int = Field(1000, ge=1, description="optimizer steps (chosen on val by recall: reports/decisions.md)")
    batch_size: int = Field(4, ge=1)
    lr: float = Field(0.01, gt=0.0, le=10.0)


class RegionTrainConfig(TrainBase):
    iters: int = Field(400, ge=1, description="optimizer steps")
    cache_mb: int = Field(1024, ge=0, le=1_000_000, description="MiB of decoded frames kept per training process "
                          "(the first loaded; the rest decoded on demand; shared by its workers); 0: decode on demand")
    batch_size: int = Field(32, ge=1)


class SegModelConfig(_Strict):
    SECTION: ClassVar[str] = "seg_model"  # the params section, named in messages
    backbone: str = Field("resnet18", description="any timm model name (features_only)")
    pretrained: str | None = Field(None, description=PRETRAINED_HELP)
    decoder_channels: int = Field(64, ge=8, le=1024)
    light_adaptation: bool = Field(True, description="the light-adaptation module (docs/design.md 1.1)")
    night_aware_loss: bool = Field(True, description="exposure-weighted cross-entropy + light regulariser")
    dark_weight: float = Field(1.0, ge=0.0, le=20.0, description="extra CE weight on under/over-exposed pixels")
    light_reg: float = Field(0.01, ge=0.0, le=10.0, description="weight of the light-adaptation regulariser")

    @field_validator("backbone")
    @classmethod
    def _timm(cls, v: str) -> str:
        return _check_timm_name(v)

    @field_validator("pretrained")
    @classmethod
    def _pretrained(cls, v, info: ValidationInfo):
        return _check_pretrained(v, info)


class ImageModelConfig(SegModelConfig):
    """The image-level model Φ^I (docs/design.md 1.1)."""
    # external: a model directory saved by nightlab.models.store (model.pt + config.json) or a TorchScript file
    # taking (N, 3, H, W) RGB in [0, 1] and returning (N, 19, H, W) logits in trainIds order; it runs at
    # image_scale. window: tiles at stride half the window, logits averaged where they overlap
    # (nightlab.inference.window_logits); read by every stage that runs the image model, never by training.
    SECTION: ClassVar[str] = "image_model"
    image_scale: float = Field(0.25, gt=0.0, le=1.0, description="whole images are processed at this scale")
    external: str | None = Field(
        None, description="your own model instead of training one: a nightlab model directory or a TorchScript "
        "file (README)")
    window: Annotated[tuple[int, int], BeforeValidator(_tuple)] | None = Field(
        None, description="[h, w] in model-input pixels: larger frames run as overlapping tiles; null: whole "
        "frames")
    train: ImageTrainConfig = ImageTrainConfig()

    @field_validator("external")
    @classmethod
    def _external_path(cls, v):
        if v is not None and not v.strip():
            raise ValueError("must be a path to a model file or directory, or null")
        return v

    @field_validator("window")
    @classmethod
    def _window_size(cls, v):
        if v is not None and min(v) < 32:
            raise ValueError("each side of the window must be at least 32 pixels")
        return v


class RegionModelConfig(SegModelConfig):
    """The region-level model Φ^R (docs/design.md 1.5): same family as Φ^I, trained on zoomed-in views."""
    SECTION: ClassVar[str] = "region_model"
    region_size: int = Field(64, ge=16, le=1024, description="model input: about region_size x region_size pixels "
                             "a view")
    crop: Literal["rect", "zoom", "square"] = Field(
        "rect", description="rect: a view of the box's aspect (1:1, 2:1 or 4:1, standing or lying), tiled when one "
        "would be below min_scale; zoom: a square around the box, tiled when long; square: the box squashed "
        "(nightlab.regions)")
    max_zoom: float = Field(2.0, ge=1.0, le=16.0, description="a view is at most this many times native")
    min_scale: float = Field(0.5, gt=0.0, le=4.0, description="a view is never seen below this scale of native "
                             "pixels (>= image_model.image_scale): longer boxes are tiled")
    jitter: float = Field(0.15, ge=0.0, le=1.0, description="random shift/scale of training views, fraction of size")
    init: Literal["scratch", "image"] = Field(
        "image", description="scratch: from the backbone's own start (pretrained); image: from the trained image "
        "model's weights (needs the same backbone, decoder_channels and light_adaptation)")
    prior: Literal["none", "image"] = Field(
        "image", description="image (val's choice, reports/decisions.md): refine the image model's prediction of "
        "each view (its logits cut to the view as extra inputs; a zero-initialised correction, so training starts "
        "from the image level); none: the views alone")
    prior_temperature: float = Field(1.0, ge=1.0, le=20.0, description="with prior: the image model's logits "
                                     "divided by this (its confidence softened), in training and inference")
    prior_noise: float = Field(1.0, ge=0.0, le=20.0, description="with prior: Gaussian noise of this s.d. added to "
                               "the image model's logits in training (1.0 chosen on val over temperature 2 and "
                               "none: it is overconfident on its own training images)")
    proposal_like: int = Field(1, ge=0, le=16, description="training boxes: each ground-truth box and this many "
                               "jittered copies, placed and sized as a detector's proposals are")
    proposal_jitter: float = Field(0.25, ge=0.0, le=1.0, description="how far those copies move and grow, "
                                   "fraction of the box's size")
    train: RegionTrainConfig = RegionTrainConfig()

    @model_validator(mode="after")
    def _prior_settings(self):
        if self.prior == "none" and (self.prior_temperature != 1.0 or self.prior_noise != 0.0):
            raise ValueError("prior_temperature and prior_noise act only with prior: image")
        return self


class HardClassesConfig(_Strict):
    """Hard-class selection on splits.select (docs/design.md 1.2)."""
    threshold: float = Field(0.3, ge=0.0, le=1.0, description="class c is hard iff IoU_c < threshold (chosen on val "
                            "from 0.3-0.6; the paper uses 0.5; reports/decisions.md)")


class RdnConfig(_Strict):
    """The region detection network: torchvision's RPN on a timm backbone (docs/design.md 1.4)."""
    SECTION: ClassVar[str] = "rdn"
    backbone: str = Field("resnet18", description="any timm model name with stride-8 features; shared: the image "
                          "model's backbone, frozen (one backbone pass for both at inference; needs image_scale = "
                          "image_model.image_scale)")
    pretrained: str | None = Field(None, description=PRETRAINED_HELP)
    fpn: bool = Field(False, description="true: strides 8 and 16 through torchvision's FeaturePyramidNetwork")
    anchor_sizes: Seq | Literal["auto"] = Field("auto", description="auto: spread over the hard boxes' sizes; "
                                                "or a list of pixel sizes at image_scale")
    aspect_ratios: Seq = Field((0.5, 1.0, 2.0), min_length=1)
    image_scale: float = Field(0.25, gt=0.0, le=1.0)
    pre_nms_top_n: int = Field(600, ge=1)
    post_nms_top_n: int = Field(100, ge=1)
    nms_thresh: float = Field(0.7, gt=0.0, le=1.0)
    fg_iou_thresh: float = Field(0.5, gt=0.0, le=1.0)
    bg_iou_thresh: float = Field(0.3, ge=0.0, le=1.0)
    train: RdnTrainConfig = RdnTrainConfig()

    @field_validator("backbone")
    @classmethod
    def _timm(cls, v: str) -> str:
        return v if v == "shared" else _check_timm_name(v)

    @field_validator("pretrained")
    @classmethod
    def _pretrained(cls, v, info: ValidationInfo):
        if v is not None and info.data.get("backbone") == "shared":
            raise ValueError("must be null with rdn.backbone: shared (the RDN uses the image model's trained backbone)")
        return _check_pretrained(v, info)

    @field_validator("anchor_sizes", "aspect_ratios")
    @classmethod
    def _positive(cls, v):
        if v != "auto" and (not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v)):
            raise ValueError("must be 'auto' or a list of positive numbers")
        return v

    @model_validator(mode="after")
    def _iou_order(self) -> RdnConfig:
        if self.bg_iou_thresh > self.fg_iou_thresh:
            raise ValueError("bg_iou_thresh must be <= fg_iou_thresh")
        return self


class HdmConfig(_Strict):
    """The hardness detection module: relabel RDN proposals, fine-tune the RPN (docs/design.md 1.6)."""
    proposals_per_image: int | None = Field(None, ge=1, le=2000, description="RDN proposals scored per training "
                                            "image; null: every proposal it keeps (rdn.post_nms_top_n)")
    match_iou: float = Field(0.5, gt=0.0, le=1.0, description="a proposal is originally positive at this IoU "
                             "with a hard box")
    criterion: Literal["merged", "region"] = Field(
        "merged", description="eq. 1's comparison inside a proposal: merged (the merge of both levels there, what "
        "inference does) or region (the region model alone) against the image level")
    targets: Literal["relabel", "gain", "boxes", "proposals"] = Field(
        "relabel", description="what the fine-tune learns: relabel (eq. 2: each scored proposal's anchor gets its "
        "new label, box regression on the ground truth); gain (the same anchors trained toward how much zooming "
        "helps, a soft target); boxes (the ground-truth hard boxes, minus those whose proposals mostly lost); "
        "proposals (the winning proposals' own boxes)")
    gain_temperature: float = Field(0.05, gt=0.0, le=1.0, description="targets gain: an anchor's target is "
                                    "sigmoid(crop-IoU gain / this)")
    finetune_iters: int = Field(150, ge=0, description="fine-tuning steps (other settings from rdn.train)")
    lr: float = Field(0.005, gt=0.0, le=10.0, description="fine-tuning learning rate")
    batch_size: int = Field(32, ge=1, description="crops per region-model batch while scoring")


class MergeConfig(_Strict):
    """Two-level inference (supplement section B, docs/design.md 1.7)."""
    score_thresh: float = Field(0.0, ge=0.0, le=1.0, description="proposals with objectness >= this ...")
    nms_thresh: float = Field(0.5, gt=0.0, le=1.0, description="... after NMS at this IoU ...")
    max_regions: int = Field(2, ge=0, le=1000, description="... the top K per image (chosen on val: the fewest "
                             "regions within 0.1 mIoU of K=10; reports/decisions.md)")
    rule: Literal["paste", "fuse", "margin"] = Field(
        "paste", description="inside a region: paste (val's choice on the default data, "
        "reports/merged/merge_rules.csv): the region model's hard classes (supplement B); margin: paste only where "
        "the region model is more confident than the image level by margin; fuse: the argmax of both levels' "
        "summed log-probabilities (docs/design.md 1.7)")
    margin: float = Field(0.1, ge=0.0, le=1.0, description="rule margin: the confidence lead the region model needs")
    batch_size: int = Field(32, ge=1, description="crops per region-model batch")
    panel_images: int = Field(4, ge=0, le=64, description="report images in the qualitative panel")


class EvaluationConfig(_Strict):
    """What evaluate_merged measures beside the headline (docs/design.md 1.8)."""
    ks: Annotated[tuple[int, ...], BeforeValidator(_tuple)] = Field(
        (2, 5, 10, 20), min_length=1, description="regions per image for the equal-budget curves")
    bootstrap: int = Field(1000, ge=100, le=100_000, description="paired per-image bootstrap resamples for CIs")
    bootstrap_seed: int = Field(0, ge=0)
    entropy_threshold: float = Field(0.7, ge=0.0, le=1.0, description="the uncertainty selector's boxes surround "
                                     "pixels whose normalised entropy is above this (chosen on val)")

    @field_validator("ks")
    @classmethod
    def _positive(cls, v):
        if any(k < 1 for k in v) or len(set(v)) != len(v):
            raise ValueError("must be distinct positive region counts")
        return tuple(sorted(v))


class DistributedConfig(_Strict):
    """Data-parallel training of the image and region models (nightlab.distributed, torchrun's launcher)."""
    nproc_per_node: int = Field(1, ge=1, le=64, description="processes per machine; 1 trains in the stage's process")
    nnodes: int = Field(1, ge=1, le=1024, description="machines; > 1 needs rdzv_endpoint and rdzv_id")
    rdzv_endpoint: str | None = Field(None, description="host:port of the c10d rendezvous; null: this machine")
    rdzv_id: str | None = Field(None, description="a job id shared by the nodes of one run")
    sync_bn: bool = Field(True, description="BatchNorm statistics over the global batch")

    @model_validator(mode="after")
    def _nodes_need_endpoint(self):
        if self.nnodes > 1 and not (self.rdzv_endpoint and self.rdzv_id):
            raise ValueError("nnodes > 1 needs rdzv_endpoint (host:port of one node) and a shared rdzv_id")
        return self


class OrchestrationConfig(_Strict):
    """Where a stage's fanned-out Prefect tasks (generation, box and HDM shards) run."""
    task_runner: Literal["threads", "dask"] = Field("threads", description="threads | dask")
    threads: int = Field(2, ge=1, le=256, description="concurrent tasks of the thread runner")
    dask_address: str | None = Field(None, description="tcp://host:8786 of a running Dask scheduler; "
                                     "null: start a local cluster")
    dask_workers: int = Field(2, ge=1, le=256, description="worker processes of that local cluster")


class BaselineConfig(_Strict):
    """An image model alone given the whole two-level system's training FLOPs (docs/design.md 1.9): the
    image_model section's network and loss, at its own scale and training shape."""
    image_scale: float = Field(gt=0.0, le=1.0, description="the scale it sees whole frames at (1.0: full resolution)")
    crop: Annotated[tuple[int, int], BeforeValidator(_tuple)] | None = Field(
        None, description="random crops (h, w) in model-input pixels; null: whole frames")
    batch_size: int = Field(8, ge=1)
    lr: float = Field(0.002, gt=0.0, le=10.0)

    _crop = field_validator("crop")(_check_crop)


BASELINES = {"longer": BaselineConfig(image_scale=0.25), "fullres": BaselineConfig(image_scale=1.0, crop=(128, 256))}


class Params(_Strict):
    """Every knob of the pipeline. DVC reads the same file: each stage in dvc.yaml names the keys it reads."""
    seed: int = Field(0, ge=0, description="training seed: initialisation, data order, augmentation")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto | cpu | cuda")
    data: DataConfig = DataConfig()
    splits: SplitsConfig = SplitsConfig()
    boxes: BoxesConfig = BoxesConfig()
    image_model: ImageModelConfig = ImageModelConfig()
    hard_classes: HardClassesConfig = HardClassesConfig()
    rdn: RdnConfig = RdnConfig()
    region_model: RegionModelConfig = RegionModelConfig()
    hdm: HdmConfig = HdmConfig()
    merge: MergeConfig = MergeConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    baselines: dict[str, BaselineConfig] = Field(
        BASELINES, description="image models alone at the two-level system's training FLOPs, trained the best way "
        "that budget allows (chosen on val): the same scale trained longer, and full resolution")
    distributed: DistributedConfig = DistributedConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()

    @model_validator(mode="after")
    def _regions_zoom_in(self):
        if self.region_model.min_scale < self.image_model.image_scale:
            raise ValueError(f"region_model.min_scale {self.region_model.min_scale} is below image_model.image_scale "
                             f"{self.image_model.image_scale}: regions would be seen zoomed out")
        return self

    @model_validator(mode="after")
    def _region_starts_from_the_image_model(self):
        r, i = self.region_model, self.image_model
        if r.init == "image":
            differ = [k for k in ("backbone", "decoder_channels", "light_adaptation") if getattr(r, k) != getattr(i, k)]
            if differ:
                raise ValueError(f"region_model.init: image needs the image model's network: region_model and "
                                 f"image_model differ in {', '.join(differ)}")
            if r.pretrained is not None:
                raise ValueError("region_model.init: image starts from the image model's weights: "
                                 "region_model.pretrained must be null")
        return self

    @model_validator(mode="after")
    def _shared_backbone_same_scale(self):
        if self.rdn.backbone == "shared" and self.rdn.image_scale != self.image_model.image_scale:
            raise ValueError(f"rdn.backbone: shared runs the RDN on the image model's features, so rdn.image_scale "
                             f"{self.rdn.image_scale} must equal image_model.image_scale "
                             f"{self.image_model.image_scale}")
        return self

    @model_validator(mode="after")
    def _batches_split_across_ranks(self):
        ranks = self.distributed.nproc_per_node * self.distributed.nnodes
        for name in ("image_model", "region_model"):
            bs = getattr(self, name).train.batch_size
            if bs % ranks:
                raise ValueError(f"{name}.train.batch_size {bs} must be divisible by the {ranks} training processes "
                                 "(distributed.nproc_per_node x nnodes)")
        return self

