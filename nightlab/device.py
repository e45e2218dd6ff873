"""Which device to compute on."""
from __future__ import annotations

import torch

from nightlab.errors import ConfigError


def pick_device(name: str = "auto", option: str = "device") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU. ``cuda`` without a GPU is the user's mistake:
    a ConfigError naming ``option`` (the params key or the command-line flag it came from)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option}: cuda: no GPU is available here (torch.cuda.is_available() is False, torch "
                          f"{torch.__version__}); use auto (the GPU when there is one) or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)
