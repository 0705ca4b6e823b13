"""Where models run: the one place that chooses the device."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
