"""Training checkpoints in the object store: complete or ignored; the newest K and the best kept.

A checkpoint is `<run>/checkpoints/step-NNNNNNNN/` holding the adapter (safetensors) and the training state
(optimizer, LR schedule, grad scaler, RNG states, sampler position, step, early-stopping state, resolved config,
MLflow run id). Its completion marker is written last, so a checkpoint cut off half-way is never resumed from;
the next complete one deletes it. The marker records the validation loss measured at that step, if any, and the
checkpoint with the lowest one is kept besides the newest K.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load, save

from artlora.io import storage

_STEP = re.compile(r"/checkpoints/step-(\d+)/")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    adapter: dict[str, torch.Tensor]
    state: dict[str, Any]
    val_loss: float | None = None


def checkpoint_uri(run_uri: str, step: int) -> str:
    return storage.join(run_uri, "checkpoints", f"step-{step:08d}")


def _steps(store: storage.Storage, run_uri: str) -> dict[int, bool]:
    """Every checkpoint step under a run, and whether it is complete."""
    steps: dict[int, bool] = {}
    for uri in store.list(storage.join(run_uri, "checkpoints")):
        match = _STEP.search(uri)
        if match:
            step = int(match.group(1))
            steps[step] = steps.get(step, False) or uri.endswith(storage.COMPLETE_MARKER)
    return steps


def _val_loss(store: storage.Storage, run_uri: str, step: int) -> float:
    marker = store.get_json(storage.join(checkpoint_uri(run_uri, step), storage.COMPLETE_MARKER))
    value = marker.get("val_loss")
    return math.inf if value is None else value


def save_checkpoint(store: storage.Storage, run_uri: str, checkpoint: Checkpoint, keep: int) -> str:
    """Write a checkpoint, marker last; then delete unfinished ones and complete ones beyond the newest `keep`,
    except the one with the lowest validation loss."""
    uri = checkpoint_uri(run_uri, checkpoint.step)
    store.put_bytes(storage.join(uri, "adapter.safetensors"), save(checkpoint.adapter))
    buffer = io.BytesIO()
    torch.save(checkpoint.state, buffer)
    store.put_bytes(storage.join(uri, "state.pt"), buffer.getvalue())
    store.mark_complete(uri, {"step": checkpoint.step, "val_loss": checkpoint.val_loss})
    steps = _steps(store, run_uri)
    complete = sorted(step for step, done in steps.items() if done)
    losses = {step: _val_loss(store, run_uri, step) for step in complete}
    best = min(complete, key=lambda step: (losses[step], -step))
    kept = set(complete[-keep:]) | ({best} if losses[best] < math.inf else set())
    for step, done in steps.items():
        if (not done and step < checkpoint.step) or (done and step not in kept):
            store.delete_prefix(checkpoint_uri(run_uri, step))
    return uri


def complete_steps(store: storage.Storage, run_uri: str) -> list[int]:
    return sorted(step for step, done in _steps(store, run_uri).items() if done)


def latest_step(store: storage.Storage, run_uri: str) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return max(complete_steps(store, run_uri), default=None)


def load_checkpoint(store: storage.Storage, run_uri: str, step: int) -> Checkpoint:
    uri = checkpoint_uri(run_uri, step)
    adapter = load(store.get_bytes(storage.join(uri, "adapter.safetensors")))
    # weights_only=False: the state holds optimizer internals we wrote ourselves, from our own bucket.
    state = torch.load(io.BytesIO(store.get_bytes(storage.join(uri, "state.pt"))), weights_only=False)
    val_loss = _val_loss(store, run_uri, step)
    return Checkpoint(step, adapter, state, None if val_loss == math.inf else val_loss)


def latest_checkpoint(store: storage.Storage, run_uri: str) -> Checkpoint | None:
    step = latest_step(store, run_uri)
    return None if step is None else load_checkpoint(store, run_uri, step)
