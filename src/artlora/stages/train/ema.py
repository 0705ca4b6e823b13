"""An exponential moving average of the adapter's trainable weights (`train.ema_decay`), as SimpleTuner, OneTrainer
and ai-toolkit keep one: after each optimizer step ema <- decay x ema + (1 - decay) x weights, with the decay
ramped up over the first steps (diffusers' EMAModel: (1 + step) / (10 + step), capped at ema_decay) unless
`ema_warmup` is off.

The average lives beside the weights in fp32 on the device (the LoRA weights are small) and goes into every
checkpoint with the optimizer's state, so a resumed run continues it exactly. `swapped_in` puts it in the weights'
place for a measurement (validation, the gallery) or for the adapter files, and the trained weights back after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch


class AdapterEMA:
    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float, warmup: bool):
        self.params, self.decay, self.warmup = list(params), decay, warmup
        self.average = [param.detach().float().clone() for param in self.params]

    def decay_at(self, step: int) -> float:
        """The decay of the update after optimizer step `step` (0 for the first)."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    def update(self, step: int) -> None:
        """Move the average toward the weights after optimizer step `step` (0 for the first)."""
        with torch.no_grad():
            weights = [param.detach().float() for param in self.params]
            torch._foreach_lerp_(self.average, weights, 1.0 - self.decay_at(step))  # in place, one kernel per group

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The average in the weights' place for the block; the trained weights, bit for bit, afterwards."""
        with torch.no_grad():
            trained = [param.detach().clone() for param in self.params]
            for param, average in zip(self.params, self.average, strict=True):
                param.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, weights in zip(self.params, trained, strict=True):
                    param.copy_(weights)

    def state_dict(self) -> dict[str, Any]:
        return {"average": list(self.average)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["average"]
        if len(saved) != len(self.average) or any(
            a.shape != b.shape for a, b in zip(saved, self.average, strict=False)
        ):
            raise ValueError("the checkpoint's EMA does not match this run's adapter")
        for average, value in zip(self.average, saved, strict=True):
            average.copy_(value)
