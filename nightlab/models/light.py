"""Light-adaptation module (our choice, docs/design.md 1.1): a small CNN predicts per-pixel curve
parameters and re-lights the image with iterated quadratic curves, as in Zero-DCE:
``x <- x + a * x * (1 - x)``, a in [-1, 1]. The curve is monotone and keeps [0, 1] in [0, 1], so
it can brighten dark areas and tame over-exposed ones without inventing structure.
The parameters are predicted at 1/4 resolution (light varies smoothly) and upsampled.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LightAdaptation(nn.Module):
    def __init__(self, hidden: int = 16, iterations: int = 4):
        super().__init__()
        self.iterations = iterations
        self.net = nn.Sequential(
            nn.Conv2d(3, hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 3 * iterations, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)  # start as the identity curve
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        small = F.avg_pool2d(x, 4, ceil_mode=True) if min(x.shape[-2:]) >= 16 else x
        alpha = torch.tanh(self.net(small))
        alpha = F.interpolate(alpha, size=x.shape[-2:], mode="bilinear", align_corners=False)
        for a in alpha.split(3, dim=1):
            x = x + a * x * (1 - x)
        return x, alpha


def light_regulariser(alpha: torch.Tensor, relit: torch.Tensor, target_exposure: float = 0.5) -> torch.Tensor:
    """Smooth curve maps (total variation) and a mid-grey local exposure (Zero-DCE's L_tv and L_exp)."""
    tv = (alpha[..., 1:, :] - alpha[..., :-1, :]).abs().mean() + (alpha[..., :, 1:] - alpha[..., :, :-1]).abs().mean()
    exposure = (F.avg_pool2d(relit.mean(1, keepdim=True), 16, ceil_mode=True) - target_exposure).pow(2).mean()
    return tv + exposure
