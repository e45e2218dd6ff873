"""The night-aware loss (our choice, ablatable): pixel-weighted cross-entropy whose weights grow
in under- and over-exposed areas of the *input* image, where night scenes lose information,
plus the light-adaptation regulariser. With ``night_aware_loss`` off it is plain cross-entropy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nightlab.distributed import batch_share
from nightlab.labels import IGNORE
from nightlab.models.light import light_regulariser


def exposure_weights(image: torch.Tensor, dark_weight: float, dark: float = 0.15, bright: float = 0.9) -> torch.Tensor:
    """1 + dark_weight * (how far a pixel's luminance is below ``dark`` or above ``bright``), in [1, 1+w]."""
    luma = 0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2]
    under = ((dark - luma) / dark).clamp(0, 1)
    over = ((luma - bright) / (1 - bright)).clamp(0, 1)
    return 1 + dark_weight * torch.maximum(under, over)


def seg_loss(logits, target, image, alpha, relit, cfg) -> torch.Tensor:
    """``cfg`` carries night_aware_loss, dark_weight, light_reg (a SegModelConfig)."""
    # Means are taken over the global batch (batch_share), so that data-parallel ranks, which see
    # different numbers of valid or dark pixels, together compute the single-process gradient.
    if not cfg.night_aware_loss:
        ce = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum")
        return ce / batch_share((target != IGNORE).sum().float()).clamp_min(1.0)
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    valid = (target != IGNORE).float()
    w = exposure_weights(image, cfg.dark_weight) * valid
    loss = (ce * w).sum() / batch_share(w.sum()).clamp_min(1.0)
    if alpha is not None and cfg.light_reg > 0:
        loss = loss + cfg.light_reg * light_regulariser(alpha, relit)
    return loss


def make_loss(cfg):
    """The ``loss_fn(model, x, y)`` the training loop calls, for a SegModelConfig."""
    def loss_fn(model, x, y):
        if isinstance(x, (tuple, list)):  # (views, the image level's prior of each): a PriorRefiner
            logits, alpha, relit = model(*x, aux=True)
            return seg_loss(logits, y, x[0], alpha, relit, cfg)
        logits, alpha, relit = model(x, aux=True)
        return seg_loss(logits, y, x, alpha, relit, cfg)
    return loss_fn
