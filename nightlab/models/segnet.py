"""Segmentation network: optional light adaptation, a timm backbone (``features_only``) and a
light FPN decoder. Input is an RGB float image in [0, 1]; output logits at the input size.
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from nightlab.models.light import LightAdaptation

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        x = self.lateral[-1](feats[-1])
        outs = [self.smooth[-1](x)]
        for i in range(len(feats) - 2, -1, -1):
            x = self.lateral[i](feats[i]) + F.interpolate(x, size=feats[i].shape[-2:], mode="nearest")
            outs.append(self.smooth[i](x))
        size = feats[0].shape[-2:]
        fused = outs[-1]
        for o in outs[:-1]:
            fused = fused + F.interpolate(o, size=size, mode="bilinear", align_corners=False)
        return self.classifier(fused)


class SegModel(nn.Module):
    def __init__(self, backbone: str, num_classes: int, decoder_channels: int = 64, light_adaptation: bool = True,
                 pretrained: str | None = None):
        super().__init__()
        self.light = LightAdaptation() if light_adaptation else None
        self.backbone = timm.create_model(backbone, pretrained=False, features_only=True)
        if pretrained:
            load_backbone_weights(self.backbone, pretrained)
        # Stride-2 features cost much and add little at our resolutions: the decoder starts at stride 4.
        info = self.backbone.feature_info
        self.levels = [i for i, r in enumerate(info.reduction()) if r >= 4] or list(range(len(info.reduction())))
        self.decoder = FPNDecoder([info.channels()[i] for i in self.levels], decoder_channels, num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Returns (logits, light curve parameters or None, re-lit image)."""
        alpha = None
        if self.light is not None:
            x, alpha = self.light(x)
        feats = self.backbone((x - self.mean) / self.std)
        logits = self.decoder([feats[i] for i in self.levels])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False), alpha, x

    def forward(self, x: torch.Tensor, aux: bool = False):
        """Logits; with ``aux`` the tuple of forward_with_aux (training calls it this way so that a
        DistributedDataParallel wrapper sees the call and averages the gradients)."""
        out = self.forward_with_aux(x)
        return out if aux else out[0]


def load_backbone_weights(backbone: nn.Module, path: str) -> None:
    """Load a local checkpoint (timm or torchvision naming) into a features_only backbone."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: pretrained backbone checkpoint not found")
    state = torch.load(p, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state.get("model", state))
    missing, _ = backbone.load_state_dict(state, strict=False)
    if len(missing) == len(backbone.state_dict()):
        raise ValueError(f"{p}: no parameter of the checkpoint matches the backbone")


def build_seg_model(cfg, num_classes: int) -> SegModel:
    """Build from an ImageModelConfig/RegionModelConfig-like object."""
    return SegModel(cfg.backbone, num_classes, cfg.decoder_channels, cfg.light_adaptation, cfg.pretrained)
