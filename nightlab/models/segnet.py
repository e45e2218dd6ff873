"""Segmentation network: optional light adaptation, a timm backbone (``features_only``) and a
light FPN decoder. Input is an RGB float image in [0, 1]; output logits at the input size.

Backbones (shared with the RDN, nightlab/models/rdn.py) start from scratch, from timm's pretrained
weights (``pretrained: timm``; timm fetches them through huggingface_hub, which keeps them in its
cache under HF_HOME and reads them from there when present), or from a local checkpoint file.
A backbone that cannot get its weights stops with a :class:`~nightlab.config.ConfigError` that
names the option, e.g. ``image_model.pretrained: timm``.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from nightlab.errors import ConfigError
from nightlab.models.light import LightAdaptation

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TIMM = "timm"  # the ``pretrained`` value that asks for timm's own weights
log = logging.getLogger(__name__)


class FPNDecoder(nn.Module):
    """Top-down FPN; every level is upsampled to stride 4 and summed (a semantic-FPN head)."""

    def __init__(self, in_channels: list[int], channels: int, num_classes: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                          nn.ReLU(inplace=True))
            for _ in in_channels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.fuse(feats))

    def fuse(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """The summed stride-4 features the classifier reads."""
        x = self.lateral[-1](feats[-1])
        outs = [self.smooth[-1](x)]
        for i in range(len(feats) - 2, -1, -1):
            x = self.lateral[i](feats[i]) + F.interpolate(x, size=feats[i].shape[-2:], mode="nearest")
            outs.append(self.smooth[i](x))
        size = feats[0].shape[-2:]
        fused = outs[-1]
        for o in outs[:-1]:
            fused = fused + F.interpolate(o, size=size, mode="bilinear", align_corners=False)
        return fused


class SegModel(nn.Module):
    def __init__(self, backbone: str, num_classes: int, decoder_channels: int = 64, light_adaptation: bool = True,
                 pretrained: str | None = None, option: str = "pretrained"):
        super().__init__()
        self.light = LightAdaptation() if light_adaptation else None
        self.backbone = create_backbone(backbone, pretrained, option)
        # Stride-2 features cost much and add little at our resolutions: the decoder starts at stride 4.
        info = self.backbone.feature_info
        self.levels = [i for i, r in enumerate(info.reduction()) if r >= 4] or list(range(len(info.reduction())))
        self.decoder = FPNDecoder([info.channels()[i] for i in self.levels], decoder_channels, num_classes)
        mean, std = input_normalisation(self.backbone)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor]:
        """The backbone's features at every level, the light curve parameters (or None), the re-lit image."""
        alpha = None
        if self.light is not None:
            x, alpha = self.light(x)
        return self.backbone((x - self.mean) / self.std), alpha, x

    def decode(self, feats: list[torch.Tensor], size) -> torch.Tensor:
        """Logits at ``size`` (h, w) from :meth:`features`."""
        logits = self.decoder([feats[i] for i in self.levels])
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Returns (logits, light curve parameters or None, re-lit image)."""
        feats, alpha, x = self.features(x)
        return self.decode(feats, x.shape[-2:]), alpha, x

    def forward(self, x: torch.Tensor, aux: bool = False):
        """Logits; with ``aux`` the tuple of forward_with_aux (training calls it this way so that a
        DistributedDataParallel wrapper sees the call and averages the gradients)."""
        out = self.forward_with_aux(x)
        return out if aux else out[0]


class PriorRefiner(nn.Module):
    """A region model that refines the image model's prediction of its view (``region_model.prior:
    image``, after SparseRefine, ECCV 2024): it gets the image model's logits cut to the view
    (``prior_logits``, (N, C, h, w) at the input size) beside the pixels, and adds a learnt correction,

        logits = prior + gate * net(x, prior),   prior = log_softmax(prior_logits / temperature),

    where ``net`` is a SegModel whose decoder also reads the prior through a 1x1 convolution. The gate
    and that convolution start at zero, so at step 0 the model reproduces the image model's prediction
    exactly and training learns only what zooming in changes. ``temperature`` > 1 softens the image
    model's confidence, which is higher on the images it was trained on than on new ones."""

    def __init__(self, net: SegModel, num_classes: int, temperature: float = 1.0):
        super().__init__()
        self.net, self.temperature = net, float(temperature)
        self.prior_proj = nn.Conv2d(num_classes, net.decoder.classifier.in_channels, 1)
        nn.init.zeros_(self.prior_proj.weight)
        nn.init.zeros_(self.prior_proj.bias)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, prior_logits: torch.Tensor, aux: bool = False):
        prior = F.log_softmax(prior_logits.float() / self.temperature, dim=1)
        feats, alpha, relit = self.net.features(x)
        fused = self.net.decoder.fuse([feats[i] for i in self.net.levels])
        fused = fused + self.prior_proj(F.interpolate(prior, size=fused.shape[-2:], mode="bilinear",
                                                      align_corners=False))
        delta = F.interpolate(self.net.decoder.classifier(fused), size=x.shape[-2:], mode="bilinear",
                              align_corners=False)
        logits = prior + self.gate * delta
        return (logits, alpha, relit) if aux else logits


def create_backbone(name: str, pretrained: str | None = None, option: str = "pretrained", **kwargs) -> nn.Module:
    """timm's ``features_only`` model ``name`` (``kwargs`` go to ``timm.create_model``, e.g. out_indices).

    ``pretrained``: None (from scratch), ``"timm"`` (timm's pretrained weights) or a local checkpoint
    file. ``option`` is the params key it came from (``image_model.pretrained``), named in errors.
    """
    if pretrained == TIMM:
        return _timm_pretrained(name, option, **kwargs)
    model = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
    if pretrained:
        load_backbone_weights(model, pretrained, option)
    return model


def input_normalisation(backbone: nn.Module) -> tuple[tuple, tuple]:
    """The mean and std timm's weights for this architecture expect (ImageNet's for most, and
    whatever the backbone starts from: the same for a model rebuilt to load a trained state)."""
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if not (isinstance(mean, tuple) and isinstance(std, tuple) and len(mean) == len(std) == 3):
        return IMAGENET_MEAN, IMAGENET_STD
    return mean, std


def _download_errors() -> tuple[type[BaseException], ...]:
    """What fetching weights raises when the network or the cache fails: OSError covers
    huggingface_hub's LocalEntryNotFoundError / HfHubHTTPError and torch.hub's URLError; httpx's
    transport errors (a connection dropped mid-download) are not OSErrors."""
    errors: tuple[type[BaseException], ...] = (OSError,)
    try:
        import httpx

        errors += (httpx.TransportError,)
    except ImportError:  # huggingface_hub < 1.0 uses requests, whose errors are OSErrors
        pass
    return errors


def _weights_source(name: str) -> tuple[str, bool]:
    """Where timm looks for the weights of ``name`` (for messages), and whether they are cached already."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is not None and cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        cached = any(isinstance(try_to_load_from_cache(cfg.hf_hub_id, f), str) for f in files)
        return f"Hugging Face Hub {cfg.hf_hub_id}, cache {constants.HF_HUB_CACHE}", cached
    if cfg is not None and cfg.url:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        return f"{cfg.url}, cache {hub}", (hub / Path(cfg.url).name).is_file()
    return "nowhere: timm has no pretrained weights for it", False


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@contextlib.contextmanager
def _quiet(logger_name: str):
    """huggingface_hub logs a warning per retry (12 lines offline, over ~50 s): our one error says it all."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _timm_pretrained(name: str, option: str, **kwargs) -> nn.Module:
    where, cached = _weights_source(name)
    if not cached and not _hub_offline():  # a download is news in a pipeline run (and slow to fail offline)
        log.warning("%s: timm: weights of backbone %r not in the cache, downloading (%s)", option, name, where)
    try:
        with _quiet("huggingface_hub"):
            return timm.create_model(name, pretrained=True, features_only=True, **kwargs)
    except _download_errors() as err:
        cause = err
        while cause.__cause__ is not None or cause.__context__ is not None:  # the root cause, e.g. DNS failure
            cause = cause.__cause__ or cause.__context__
        why = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}".rstrip(": ")
        save = (f"python -c \"import timm, torch; torch.save(timm.create_model('{name}', pretrained=True, "
                f"features_only=True).state_dict(), '{name}.pt')\"")
        raise ConfigError(
            f"{option}: timm: the pretrained weights of backbone {name!r} could not be downloaded or found in the "
            f"cache\n  looked in: {where}\n  because: {why}\n  fix: run once where the Hub is reachable (or copy "
            f"that cache here), or set {option} to a local checkpoint file, e.g. one written where there is "
            f"internet by\n    {save}") from None
    except RuntimeError as err:
        if "pretrained" not in str(err).lower():
            raise
        raise ConfigError(f"{option}: timm: {err}") from None


def _read_checkpoint(p: Path) -> dict:
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(p)
    state = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"holds a {type(state).__name__}, not a state_dict")
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state.get(key), dict):
            return state[key]
    return state


def load_backbone_weights(backbone: nn.Module, path: str, option: str = "pretrained") -> int:
    """Load a local checkpoint (timm or torchvision naming) into a features_only backbone.

    Keys the backbone lacks (a classifier, stages past the last output) are ignored; a checkpoint of
    which no tensor fits, or one with a tensor of the wrong shape, is refused. Returns the number of
    tensors loaded.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{option}: {p}: backbone checkpoint file not found (null: from scratch; timm: timm's "
                          "pretrained weights)")
    try:
        state = _read_checkpoint(p)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix: say which and why
        raise ConfigError(f"{option}: {p}: not a readable checkpoint ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from None
    own = backbone.state_dict()
    wrong = [k for k, v in state.items() if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
    if wrong:
        raise ConfigError(f"{option}: {p}: {len(wrong)} tensor(s) have other shapes than the backbone's, e.g. "
                          f"{wrong[0]} {tuple(state[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)} "
                          "(a checkpoint of another architecture?)")
    loaded = sum(k in own for k in state)
    missing = [k for k in own if k not in state]
    if loaded == 0:
        raise ConfigError(f"{option}: {p}: no tensor of the checkpoint matches the backbone's names "
                          f"(e.g. {next(iter(own), '?')}); save the timm features_only backbone's state_dict")
    backbone.load_state_dict(state, strict=False)
    if missing:
        log.warning("%s: %s: %d of the backbone's %d tensors are not in the checkpoint (left as initialised)",
                    option, p, len(missing), len(own))
    return loaded


def build_seg_model(cfg, num_classes: int) -> nn.Module:
    """Build from an ImageModelConfig/RegionModelConfig-like object: a SegModel, or a PriorRefiner around one
    for a region model with ``prior: image``."""
    option = f"{getattr(cfg, 'SECTION', 'model')}.pretrained"
    net = SegModel(cfg.backbone, num_classes, cfg.decoder_channels, cfg.light_adaptation, cfg.pretrained, option)
    if getattr(cfg, "prior", "none") == "image":
        return PriorRefiner(net, num_classes, cfg.prior_temperature)
    return net


def segmentation_net(model: nn.Module) -> SegModel:
    """The SegModel inside a model (itself, or a PriorRefiner's ``net``)."""
    return model.net if isinstance(model, PriorRefiner) else model
