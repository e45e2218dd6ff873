"""Typed configuration: the one place where every knob and its default is defined.

``params.yaml`` is loaded once at the edge (a stage's entry point or the command line),
validated here and passed around as frozen objects. The shipped ``params.yaml`` is exactly
:func:`params_yaml` of the defaults (a test keeps them equal), so defaults live here alone;
profiles in ``profiles/`` are overlays that name only what they change.

Unknown keys are refused (a typo must not silently fall back to a default), values keep their
YAML type (``"0.5"`` or ``true`` is not a number), and every bad value is reported with its
dotted key and the allowed range, e.g. ``params.yaml: hard_classes.threshold = 1.7: must be <= 1``.
"""
from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

REAL_KINDS = ("cityscapes", "nightcity", "acdc", "darkzurich", "bdd100k", "folder")
DATASET_KINDS = ("synthetic", *REAL_KINDS)
# Keys that existed once and were removed: a params file that still sets one gets told why.
REMOVED = {
    "data.synthetic.workers": "it never did anything (generation shards run on orchestration.threads / dask_workers)",
    "hdm.crop_iou": "replaced by hdm.criterion",
    "hard_classes.split": "replaced by splits.select (source/split/domain selectors)",
    "hard_classes.domain": "replaced by splits.select (source/split/domain selectors)",
    "rdn.train.crop": "the RDN always trains on whole images",
    "region_model.train.crop": "the region model trains on box crops (region_model.region_size)",
}


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the file, the key and the problem."""


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
    """The built-in procedural night city (docs/design.md section 4)."""
    version: Literal[1, 2] = Field(2, description="generator version: 2 sized from real street scenes and the same "
                                   "bits on every x86 machine; 1 the original (docs/design.md 4)")
    height: int = Field(256, ge=64, le=2048, description="native image height")
    width: int = Field(512, ge=64, le=4096, description="native image width")
    train: int = Field(160, ge=0, description="scenes in the train split; each is rendered by day and by night")
    val: int = Field(40, ge=0, description="scenes in the val split")
    test: int = Field(120, ge=0, description="scenes in the test split (held out: the headline numbers)")


_NAME = re.compile(r"[A-Za-z0-9_-]+")


class SourceConfig(_Strict):
    """One real dataset on disk, read by its adapter (nightlab.data.adapters)."""
    kind: Literal[REAL_KINDS]  # type: ignore[valid-type]
    root: str = Field(description="dataset root; a DVC dependency of the check_source@<name> stage")
    splits: Names = Field(("train", "val"), min_length=1, description="splits to read")
    domain: Literal["auto", "day", "night"] = Field("auto", description="auto: what the adapter says")
    encoding: Literal["auto", "labelIds", "trainIds"] = Field(
        "auto", description="label encoding; auto: the dataset's own (kind folder must name one)")

    @field_validator("splits")
    @classmethod
    def _unique_splits(cls, v):
        dup = sorted({s for s in v if v.count(s) > 1})
        if dup:
            raise ValueError(f"split(s) {dup} listed more than once")
        return v

    @model_validator(mode="after")
    def _encoding_known(self):
        if self.kind == "folder" and self.encoding == "auto":
            raise ValueError("kind folder needs encoding: labelIds or trainIds (a folder's masks can be either)")
        if self.kind in ("nightcity", "acdc", "darkzurich") and self.encoding == "trainIds":
            raise ValueError(f"kind {self.kind} ships labelIds only; encoding must be auto or labelIds")
        if self.kind == "bdd100k" and self.encoding == "labelIds":
            raise ValueError("kind bdd100k ships trainIds masks only; encoding must be auto or trainIds")
        return self


class DataConfig(_Strict):
    """Where the samples come from: the synthetic generator or one dataset (kind/root), and data.sources."""
    seed: int = Field(0, ge=0, description="data seed: drives the synthetic generator (training has its own seed)")
    kind: Literal[(*DATASET_KINDS, "none")] = Field(  # type: ignore[valid-type]
        "synthetic", description="one-source shorthand: synthetic | cityscapes | nightcity | acdc | darkzurich | "
        "bdd100k | folder | none")
    root: str = Field("data/raw", description="root of the kind above (real kinds); a DVC dependency of prepare_data")
    splits: Names = Field(("train", "val", "test"), min_length=1,
                          description="splits of the kind above to read or generate")
    encoding: Literal["auto", "labelIds", "trainIds"] = Field("auto", description="label encoding of the kind above")
    domain: Literal["auto", "day", "night"] = Field("auto", description="override the domain the adapter gives")
    sources: dict[str, SourceConfig] = Field(
        {}, description="more datasets by name: {kind, root, splits, domain, encoding}; DVC tracks each root")
    out: str = Field("data/prepared", description="where prepare_data writes generated images and labels")
    check_workers: int = Field(2, ge=1, le=64, description="threads that open and check every sample")
    max_errors: int = Field(20, ge=1, le=10_000, description="bad files reported in one pass before stopping")
    synthetic: SyntheticConfig = SyntheticConfig()

    @field_validator("splits")
    @classmethod
    def _unique_splits(cls, v):
        return SourceConfig._unique_splits(v)

    @field_validator("sources")
    @classmethod
    def _source_names(cls, v):
        bad = [n for n in v if not _NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"source names {bad} must be letters, digits, '_' or '-' (they name files and stages)")
        return v

    @model_validator(mode="after")
    def _sources_consistent(self):
        if self.kind in REAL_KINDS:
            SourceConfig(kind=self.kind, root=self.root, splits=self.splits, domain=self.domain, encoding=self.encoding)
        if self.kind in self.sources:
            raise ValueError(f"source name {self.kind!r} is taken by data.kind; rename the entry in data.sources")
        if self.kind == "none" and not self.sources:
            raise ValueError("data.kind none needs at least one entry in data.sources")
        if self.kind == "synthetic":
            bad = [s for s in self.splits if s not in ("train", "val", "test")]
            if bad:
                raise ValueError(f"the synthetic generator makes splits train, val and test, not {bad}")
            empty = [s for s in self.splits if getattr(self.synthetic, s) == 0]
            if empty:
                raise ValueError(f"split(s) {empty} are listed but data.synthetic has 0 scenes for them")
        return self

    def source(self) -> SourceConfig:
        """The real dataset named by kind/root (a real kind only)."""
        return SourceConfig(kind=self.kind, root=self.root, splits=self.splits, domain=self.domain,
                            encoding=self.encoding)

    def source_names(self) -> list[str]:
        """Every source by name (the manifest's ``source`` column): the shorthand kind, then data.sources."""
        return ([] if self.kind == "none" else [self.kind]) + list(self.sources)


class RowSelector(BaseModel):
    """``source/split/domain`` with shell wildcards, e.g. ``nightcity/val/night`` or ``*/train/*``."""
    model_config = ConfigDict(frozen=True)
    source: str
    split: str
    domain: str

    @classmethod
    def parse(cls, text: str) -> RowSelector:
        parts = text.split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"{text!r} is not source/split/domain (use * for any, e.g. '*/val/night')")
        if parts[2] not in ("day", "night", "*"):
            raise ValueError(f"{text!r}: domain must be day, night or *")
        return cls(source=parts[0], split=parts[1], domain=parts[2])

    def __str__(self) -> str:
        return f"{self.source}/{self.split}/{self.domain}"

    def matches(self, source: str, split: str, domain: str) -> bool:
        return (fnmatch.fnmatchcase(source, self.source) and fnmatch.fnmatchcase(split, self.split)
                and fnmatch.fnmatchcase(domain, self.domain))


def _selectors(v):
    v = [v] if isinstance(v, str) else v
    if not isinstance(v, (list, tuple)) or not v:
        raise ValueError("must be a non-empty list of source/split/domain selectors")
    return tuple(s if isinstance(s, RowSelector) else RowSelector.parse(s) for s in v)


def selectors(*texts: str) -> tuple[RowSelector, ...]:
    """``selectors("*/val/night")``: RowSelectors from their text, for code and tests."""
    return tuple(RowSelector.parse(t) for t in texts)


def _may_meet(a: str, b: str) -> bool:
    return a == b or fnmatch.fnmatchcase(a, b) or fnmatch.fnmatchcase(b, a)


def shared_rows(select, report) -> list[str]:
    """Report selectors that can match rows of the selection split (then they are not held out)."""
    def meet(r, s) -> bool:
        return all(_may_meet(x, y) for x, y in zip((r.source, r.split, r.domain), (s.source, s.split, s.domain)))

    return sorted({str(r) for r in report for s in select if meet(r, s)})


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
    min_area: int = Field(12, ge=0, description="drop instances/components smaller than this (native pixels)")
    context: float = Field(0.5, ge=0.0, le=4.0, description="grow each side by this fraction of the box size")
    min_size: int = Field(24, ge=1, description="boxes are at least this wide and high after expansion")
    connectivity: Literal[4, 8] = Field(8, description="pixel connectivity of components")


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


class RdnTrainConfig(TrainBase):
    iters: int = Field(1000, ge=1, description="optimizer steps (1000: recall@100 of hard boxes 33% on val, 7% at "
                       "300; reports/decisions.md)")
    batch_size: int = Field(4, ge=1)
    lr: float = Field(0.01, gt=0.0, le=10.0)


class RegionTrainConfig(TrainBase):
    iters: int = Field(400, ge=1, description="optimizer steps")
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
    image_scale: float = Field(0.5, gt=0.0, le=1.0, description="whole images are processed at this scale")
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
    region_size: int = Field(64, ge=16, le=1024, description="model input: every view is resized to this square")
    crop: Literal["zoom", "square"] = Field("zoom", description="zoom: a square view around the box, its aspect "
                                            "kept, tiled when long (nightlab.regions); square: the box squashed")
    max_zoom: float = Field(4.0, ge=1.0, le=16.0, description="a small box is magnified at most this much")
    min_scale: float = Field(0.5, gt=0.0, le=1.0, description="a view is never seen below this scale of native "
                             "pixels (>= image_model.image_scale): longer boxes are tiled")
    jitter: float = Field(0.15, ge=0.0, le=1.0, description="random shift/scale of training views, fraction of size")
    train: RegionTrainConfig = RegionTrainConfig()


class HardClassesConfig(_Strict):
    """Hard-class selection on splits.select (docs/design.md 1.2)."""
    threshold: float = Field(0.3, ge=0.0, le=1.0, description="class c is hard iff IoU_c < threshold (0.3: the "
                            "best of 0.3-0.6 on val; the paper uses 0.5; reports/decisions.md)")


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
    image_scale: float = Field(0.5, gt=0.0, le=1.0)
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
    proposals_per_image: int = Field(50, ge=1, le=2000, description="RDN proposals scored per training image")
    match_iou: float = Field(0.5, gt=0.0, le=1.0, description="a proposal is originally positive at this IoU "
                             "with a hard box")
    criterion: Literal["merged", "region"] = Field(
        "merged", description="eq. 1's comparison inside a proposal: merged (the merge of both levels there, what "
        "inference does) or region (the region model alone) against the image level")
    targets: Literal["boxes", "proposals"] = Field(
        "boxes", description="what the fine-tune learns: boxes (the ground-truth hard boxes, minus those whose "
        "proposals mostly lost) or proposals (the winning proposals' own boxes)")
    finetune_iters: int = Field(150, ge=0, description="fine-tuning steps (other settings from rdn.train)")
    lr: float = Field(0.005, gt=0.0, le=10.0, description="fine-tuning learning rate")
    batch_size: int = Field(32, ge=1, description="crops per region-model batch while scoring")


class MergeConfig(_Strict):
    """Two-level inference (supplement section B, docs/design.md 1.7)."""
    score_thresh: float = Field(0.0, ge=0.0, le=1.0, description="proposals with objectness >= this ...")
    nms_thresh: float = Field(0.5, gt=0.0, le=1.0, description="... after NMS at this IoU ...")
    max_regions: int = Field(2, ge=0, le=1000, description="... the top K per image (2: the fewest of 2-10 within "
                             "0.1 mIoU of K=10 on val; reports/decisions.md)")
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
    distributed: DistributedConfig = DistributedConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()

    @model_validator(mode="after")
    def _regions_zoom_in(self):
        if self.region_model.min_scale < self.image_model.image_scale:
            raise ValueError(f"region_model.min_scale {self.region_model.min_scale} is below image_model.image_scale "
                             f"{self.image_model.image_scale}: regions would be seen zoomed out")
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


# ------------------------------------------------------------------------------ loading, errors

def _at(data, loc) -> Any:
    value = data
    for p in loc:
        if isinstance(value, dict):
            value = value.get(p, "?")
        elif isinstance(value, (list, tuple)) and isinstance(p, int) and -len(value) <= p < len(value):
            value = value[p]
        # else: a union-branch tag such as 'tuple[int, ...]' names no data: stay on the same value
    return value


def _format_error(source: str, data: dict, err: ValidationError) -> str:
    lines = [f"{source}: invalid parameters"]
    seen = set()
    for e in err.errors():
        # Drop pydantic's union/validator tags from the dotted key: only names and indices of the data.
        loc = [p for p in e["loc"] if isinstance(p, int) or not any(c in str(p) for c in "[]()")]
        key = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            why = REMOVED.get(key)
            msg = f"was removed: {why}" if why else "unknown key (a typo? see params.yaml for every key)"
        else:
            msg = e["msg"].replace("Value error, ", "")
        line = f"  {key} = {_at(data, loc)!r}: {msg}" if loc else f"  {msg}"  # a rule across sections: no one value
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return "\n".join(lines)


def parse_params(data: dict | None, source: str = "params") -> Params:
    try:
        return Params.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_error(source, data or {}, err)) from None


def read_params_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read params file: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data or {}


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_params_file(path), str(path))


def merge_overlay(base: dict, overlay: dict) -> dict:
    """``overlay`` (a profile) on top of ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in overlay.items():
        out[k] = merge_overlay(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and v else v
    return out


def load_profile(path: str | Path) -> Params:
    """A profile is an overlay on the defaults: it names only what it changes."""
    defaults = Params().model_dump(mode="json")
    return parse_params(merge_overlay(defaults, read_params_file(path)), str(path))


# ----------------------------------------------------------------------- params.yaml, written

def _scalar(v) -> str:
    return yaml.safe_dump(v, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()


def _emit(model: BaseModel, data: dict, indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    fields = type(model).model_fields
    for name, value in data.items():
        info = fields.get(name)
        sub = getattr(model, name, None)
        doc = (info.description or "") if info else ""
        if isinstance(sub, BaseModel) and not isinstance(sub, RowSelector):
            head = (type(sub).__doc__ or "").strip().splitlines()[0] if type(sub).__doc__ else ""
            lines.append(f"{pad}{name}:" + (f"  # {head}" if head and not doc else f"  # {doc}" if doc else ""))
            _emit(sub, value, indent + 1, lines)
        elif isinstance(value, dict) and value:  # data.sources: a mapping of sub-models
            lines.append(f"{pad}{name}:" + (f"  # {doc}" if doc else ""))
            for key, item in value.items():
                lines.append(f"{pad}  {key}:")
                _emit(sub[key], item, indent + 2, lines)
        else:
            text = f"{pad}{name}: {_scalar(value)}"
            lines.append(f"{text:<40}  # {doc}" if doc else text)


def params_yaml(params: Params, header: str = "") -> str:
    """``params`` as a complete, commented params.yaml (DVC looks up every key a stage names)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    _emit(params, params.model_dump(mode="json"), 0, lines)
    return "\n".join(lines) + "\n"


DEFAULT_HEADER = """\
The one place for knobs, read by every stage (nightlab.config validates it once; an unknown key
or a value out of range stops the stage with a message naming the key). Every value here is the
default: regenerate with `nightlab params` after changing a default in nightlab/config.py, or
start from a profile: `nightlab params --profile profiles/<name>.yaml`."""


# ------------------------------------------------------------------------------ scoped reading

class UndeclaredParam(AttributeError):
    """A stage read a params key that its dvc.yaml entry does not declare (DVC would not rerun it)."""


class ParamsView:
    """Read-only view of :class:`Params` that allows only the declared keys.

    A stage gets ``ParamsView(params, keys_in_dvc_yaml)``: reading a key that dvc.yaml does not list
    for the stage raises :class:`UndeclaredParam` instead of silently making the stage depend on a
    value DVC does not watch. A declared key returns the real object (so library code sees plain
    config models); an ancestor of declared keys returns another view.
    """

    def __init__(self, obj, allowed, path: str = "", stage: str = "this stage", seen: set | None = None):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_allowed", tuple(allowed))
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_seen", seen if seen is not None else set())

    def __getattr__(self, name: str):
        if name.startswith("_"):  # dunder lookups (pickle, copy) and our own slots: not params
            raise AttributeError(name)
        key = f"{self._path}.{name}" if self._path else name
        value = getattr(self._obj, name)
        if callable(value) and not isinstance(value, BaseModel):
            raise UndeclaredParam(f"{self._stage}: call {name}() on a declared section, not on the params view")
        if any(key == a or key.startswith(a + ".") for a in self._allowed):
            self._seen.add(key)
            return value
        if any(a.startswith(key + ".") for a in self._allowed):
            return ParamsView(value, self._allowed, key, self._stage, self._seen)
        raise UndeclaredParam(f"{self._stage} reads params key {key!r}, which its dvc.yaml entry does not declare "
                              f"(declared: {', '.join(self._allowed)})")

    def __getitem__(self, name: str):  # mappings such as data.sources
        key = f"{self._path}.{name}"
        value = self._obj[name]
        if any(key == a or key.startswith(a + ".") for a in self._allowed):
            self._seen.add(key)
            return value
        if any(a.startswith(key + ".") for a in self._allowed):
            return ParamsView(value, self._allowed, key, self._stage, self._seen)
        raise UndeclaredParam(f"{self._stage} reads params key {key!r}, which its dvc.yaml entry does not declare "
                              f"(declared: {', '.join(self._allowed)})")

    def __setattr__(self, name, value):
        raise AttributeError("params are read-only")

    def __repr__(self) -> str:
        return f"ParamsView({self._path or 'params'}, allowed={list(self._allowed)})"

    @property
    def seen(self) -> set[str]:
        """The declared keys (or their sub-keys) read so far."""
        return self._seen
