"""Training checkpoints in the object store: complete or ignored, newest K kept.

A checkpoint is `<run>/checkpoints/step-NNNNNNNN/` holding the adapter (safetensors) and the training state
(optimizer, LR schedule, step, MLflow run id). Its completion marker is written last, so a checkpoint cut off
half-way is never resumed from; the next complete one deletes it.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load, save

from artlora import storage

_STEP = re.compile(r"/checkpoints/step-(\d+)/")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    adapter: dict[str, torch.Tensor]
    state: dict[str, Any]


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


def save_checkpoint(store: storage.Storage, run_uri: str, checkpoint: Checkpoint, keep: int) -> str:
    uri = checkpoint_uri(run_uri, checkpoint.step)
    store.put_bytes(storage.join(uri, "adapter.safetensors"), save(checkpoint.adapter))
    buffer = io.BytesIO()
    torch.save(checkpoint.state, buffer)
    store.put_bytes(storage.join(uri, "state.pt"), buffer.getvalue())
    store.mark_complete(uri, {"step": checkpoint.step})
    complete = sorted(step for step, done in _steps(store, run_uri).items() if done)
    for step, done in _steps(store, run_uri).items():
        if (not done and step < checkpoint.step) or (done and step in complete[:-keep]):
            store.delete_prefix(checkpoint_uri(run_uri, step))
    return uri


def latest_step(store: storage.Storage, run_uri: str) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return max((step for step, done in _steps(store, run_uri).items() if done), default=None)


def latest_checkpoint(store: storage.Storage, run_uri: str) -> Checkpoint | None:
    step = latest_step(store, run_uri)
    if step is None:
        return None
    uri = checkpoint_uri(run_uri, step)
    adapter = load(store.get_bytes(storage.join(uri, "adapter.safetensors")))
    # weights_only=False: the state holds optimizer internals we wrote ourselves, from our own bucket.
    state = torch.load(io.BytesIO(store.get_bytes(storage.join(uri, "state.pt"))), weights_only=False)
    return Checkpoint(step, adapter, state)
