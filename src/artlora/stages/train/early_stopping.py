"""Early stopping on the validation loss, and the best adapter seen so far.

The state travels in every checkpoint, so a resumed run knows its best loss, its best adapter and how many
validations in a row have not improved, and stops (or not) exactly where an uninterrupted run would.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass
class EarlyStopping:
    patience: int  # validations in a row without improvement before stopping; 0 never stops
    min_delta: float  # an improvement is a decrease by more than this
    best_loss: float = math.inf
    best_step: int | None = None
    stale: int = 0  # validations since the last improvement
    best_adapter: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def update(self, step: int, loss: float, adapter: dict[str, torch.Tensor]) -> bool:
        """Record a validation; True when it improved (then `adapter`, CPU tensors, becomes the best)."""
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_step, self.stale, self.best_adapter = loss, step, 0, adapter
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.stale >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EarlyStopping:
        return cls(**state)
