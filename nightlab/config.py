"""Typed configuration: params.yaml is loaded once, validated here, and passed around as objects.

Every knob of the pipeline lives in params.yaml. Unknown keys are refused (a typo should not
silently fall back to a default) and every bad value is reported with its dotted key and the
allowed range, e.g. ``params.yaml: hard_classes.threshold = 1.7: must be <= 1``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DATASET_KINDS = ("synthetic", "cityscapes", "nightcity", "acdc", "darkzurich", "bdd100k", "folder")


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the file, the key and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_timm_name(name: str) -> str:
    import timm  # imported lazily: config loading must stay cheap for `--help`

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ValueError(f"unknown timm model name {name!r}{hint}")
    return name


class SyntheticConfig(_Strict):
    height: int = Field(256, ge=64, le=2048)
    width: int = Field(512, ge=64, le=4096)
    train: int = Field(160, ge=1, description="scenes in the train split (each rendered by day and night)")
    val: int = Field(40, ge=1)
    test: int = Field(0, ge=0)
    workers: int = Field(2, ge=1, le=64)


class DataConfig(_Strict):
    kind: Literal[DATASET_KINDS] = "synthetic"  # type: ignore[valid-type]
    root: str = Field("data/raw", description="dataset root for real datasets")
    out: str = "data/prepared"
    splits: tuple[str, ...] = ("train", "val")
    encoding: Literal["labelIds", "trainIds"] | None = Field(None, description="label encoding for kind 'folder'")
    domain: Literal["auto", "day", "night"] = Field("auto", description="override the adapter's domain")
    check_workers: int = Field(2, ge=1, le=64, description="threads that open and check every sample")
    synthetic: SyntheticConfig = SyntheticConfig()


class BoxesConfig(_Strict):
    min_area: int = Field(12, ge=0, description="components/instances smaller than this (pixels) are dropped")
    context: float = Field(0.5, ge=0.0, le=4.0, description="each side grows by context * box size")
    min_size: int = Field(24, ge=1, description="boxes are grown to at least this side (pixels)")
    connectivity: Literal[4, 8] = 8


class SegModelConfig(_Strict):
    backbone: str = "resnet18"
    pretrained: str | None = Field(None, description="local checkpoint file for the backbone")
    decoder_channels: int = Field(64, ge=8, le=1024)
    light_adaptation: bool = True
    night_aware_loss: bool = True
    dark_weight: float = Field(1.0, ge=0.0, le=20.0, description="extra CE weight on under/over-exposed pixels")
    light_reg: float = Field(0.01, ge=0.0, le=10.0)

    @field_validator("backbone")
    @classmethod
    def _timm(cls, v: str) -> str:
        return _check_timm_name(v)


class TrainConfig(_Strict):
    iters: int = Field(600, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    poly_power: float = Field(0.9, ge=0.0, le=10.0)
    ckpt_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    workers: int = Field(0, ge=0, le=64)
    domains: tuple[Literal["day", "night"], ...] = ("day", "night")
    crop: tuple[int, int] | None = Field(None, description="random crop (h, w) in model input pixels")
    hflip: bool = True
    amp: bool = True


class ImageModelConfig(SegModelConfig):
    image_scale: float = Field(0.5, gt=0.0, le=1.0, description="whole images are processed at this scale")
    train: TrainConfig = TrainConfig()


class RegionModelConfig(SegModelConfig):
    region_size: int = Field(64, ge=16, le=1024, description="crops are resized to region_size x region_size")
    jitter: float = Field(0.15, ge=0.0, le=1.0, description="random shift/scale of crop boxes, fraction of size")
    train: TrainConfig = TrainConfig(iters=800, batch_size=32)


class HardClassesConfig(_Strict):
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    split: str = "val"
    domain: Literal["day", "night", "all"] = "night"


class RdnConfig(_Strict):
    backbone: str = "resnet18"
    pretrained: str | None = None
    fpn: bool = False
    anchor_sizes: tuple[int, ...] | Literal["auto"] = "auto"
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    image_scale: float = Field(0.5, gt=0.0, le=1.0)
    pre_nms_top_n: int = Field(600, ge=1)
    post_nms_top_n: int = Field(100, ge=1)
    nms_thresh: float = Field(0.7, gt=0.0, le=1.0)
    fg_iou_thresh: float = Field(0.5, gt=0.0, le=1.0)
    bg_iou_thresh: float = Field(0.3, ge=0.0, le=1.0)
    train: TrainConfig = TrainConfig(iters=400, batch_size=4, lr=5e-3, ckpt_every=100)

    @field_validator("backbone")
    @classmethod
    def _timm(cls, v: str) -> str:
        return _check_timm_name(v)

    @model_validator(mode="after")
    def _iou_order(self) -> "RdnConfig":
        if self.bg_iou_thresh > self.fg_iou_thresh:
            raise ValueError("bg_iou_thresh must be <= fg_iou_thresh")
        return self


class HdmConfig(_Strict):
    proposals_per_image: int = Field(50, ge=1, le=2000)
    match_iou: float = Field(0.5, gt=0.0, le=1.0, description="a proposal is originally positive at this IoU to a hard box")
    crop_iou: Literal["present_classes"] = "present_classes"
    finetune_iters: int = Field(200, ge=0)
    lr: float = Field(2e-3, gt=0.0, le=10.0)
    batch_size: int = Field(16, ge=1, description="crops per region-model batch")


class MergeConfig(_Strict):
    score_thresh: float = Field(0.5, ge=0.0, le=1.0)
    nms_thresh: float = Field(0.5, gt=0.0, le=1.0)
    max_regions: int = Field(20, ge=0, le=1000)
    batch_size: int = Field(32, ge=1)
    panel_images: int = Field(4, ge=0, le=64)


class OrchestrationConfig(_Strict):
    """Where a stage's fanned-out Prefect tasks (generation, box, HDM relabel shards) run."""
    task_runner: Literal["threads", "dask"] = "threads"
    threads: int = Field(2, ge=1, le=256, description="concurrent tasks of the thread runner")
    dask_address: str | None = Field(None, description="scheduler of a running Dask cluster; none: start a local one")
    dask_workers: int = Field(2, ge=1, le=256, description="worker processes of the local Dask cluster")


class DistributedConfig(_Strict):
    """Data-parallel training of the image and region models (nightlab.distributed, torchrun's launcher)."""
    nproc_per_node: int = Field(1, ge=1, le=64, description="training processes per machine (GPUs, or CPU ranks)")
    nnodes: int = Field(1, ge=1, le=1024, description="machines; each runs the stage with the same rdzv settings")
    rdzv_endpoint: str | None = Field(None, description="host:port of the c10d rendezvous; none: this machine")
    rdzv_id: str | None = Field(None, description="a job id shared by the nodes of one run")
    sync_bn: bool = True

    @model_validator(mode="after")
    def _nodes_need_endpoint(self):
        if self.nnodes > 1 and not (self.rdzv_endpoint and self.rdzv_id):
            raise ValueError("nnodes > 1 needs rdzv_endpoint (host:port of one node) and a shared rdzv_id")
        return self


class Params(_Strict):
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = DataConfig()
    boxes: BoxesConfig = BoxesConfig()
    image_model: ImageModelConfig = ImageModelConfig()
    hard_classes: HardClassesConfig = HardClassesConfig()
    rdn: RdnConfig = RdnConfig()
    region_model: RegionModelConfig = RegionModelConfig()
    hdm: HdmConfig = HdmConfig()
    merge: MergeConfig = MergeConfig()
    distributed: DistributedConfig = DistributedConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()

    @model_validator(mode="after")
    def _batches_split_across_ranks(self):
        ranks = self.distributed.nproc_per_node * self.distributed.nnodes
        for name in ("image_model", "region_model"):
            bs = getattr(self, name).train.batch_size
            if bs % ranks:
                raise ValueError(f"{name}.train.batch_size {bs} must be divisible by the {ranks} training processes "
                                 "(distributed.nproc_per_node x nnodes)")
        return self


def _format_error(source: str, data: dict, err: ValidationError) -> str:
    lines = [f"{source}: invalid parameters"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        value = data
        for p in e["loc"]:
            if isinstance(value, dict):
                value = value.get(p, "?")
            elif isinstance(value, (list, tuple)) and isinstance(p, int) and -len(value) <= p < len(value):
                value = value[p]
            # else: a union-branch tag such as 'tuple[int, ...]' names no data: stay on the same value
        msg = e["msg"].replace("Value error, ", "")
        lines.append(f"  {key} = {value!r}: {msg}")
    return "\n".join(lines)


def parse_params(data: dict, source: str = "params") -> Params:
    try:
        return Params.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_error(source, data or {}, err)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read params file: {err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return parse_params(data, str(path))
