"""Training checkpoints in the object store: complete or ignored; the newest K and the best kept.

A checkpoint is `<run>/checkpoints/step-NNNNNNNN/` holding the adapter (`adapter.safetensors`) and the training
state (optimizer, LR schedule, grad scaler, RNG states, the adapter's EMA with `ema_decay`, sampler position,
step, early-stopping state, resolved config, MLflow run id) as `state.safetensors` (its tensors) plus `state.json`
(the rest, naming the tensors).
Nothing in a checkpoint is unpickled: whoever can write to the bucket cannot make the train task run code. A
checkpoint whose files are not these (a planted `state.pt`, a pickle under a safetensors name, a damaged file) is
refused with a warning, and the run resumes from the newest checkpoint that loads.

Its completion marker is written last, so a checkpoint cut off half-way is never resumed from; the next complete
one deletes it. The marker records the validation loss measured at that step, if any, and the checkpoint with
the lowest one is kept besides the newest K.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from artlora import contracts
from artlora.data import tensor_files
from artlora.io import storage

log = logging.getLogger(__name__)

_STEP = re.compile(rf"/{contracts.CHECKPOINTS}/step-(\d+)/")
ADAPTER, STATE_TENSORS, STATE_JSON = "adapter.safetensors", "state.safetensors", "state.json"


@dataclass(frozen=True)
class Checkpoint:
    step: int
    adapter: dict[str, torch.Tensor]
    state: dict[str, Any]
    val_loss: float | None = None


def checkpoint_uri(run_uri: str, step: int) -> str:
    return contracts.checkpoint_folder(run_uri, step)


def _steps(store: storage.Storage, run_uri: str) -> dict[int, bool]:
    """Every checkpoint step under a run, and whether it is complete."""
    steps: dict[int, bool] = {}
    for uri in store.list(contracts.checkpoints_folder(run_uri)):
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
    store.put_bytes(storage.join(uri, ADAPTER), tensor_files.save_bytes(checkpoint.adapter))
    tensors, skeleton = tensor_files.state_files(checkpoint.state)
    store.put_bytes(storage.join(uri, STATE_TENSORS), tensors)
    store.put_bytes(storage.join(uri, STATE_JSON), skeleton, content_type="application/json")
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


class UnusableCheckpointError(ValueError):
    """A complete checkpoint whose files are not an artlora checkpoint's (planted, damaged or of old code)."""


def load_checkpoint(store: storage.Storage, run_uri: str, step: int) -> Checkpoint:
    """The checkpoint at `step`, read from safetensors and JSON only; UnusableCheckpointError otherwise."""
    uri = checkpoint_uri(run_uri, step)
    try:
        adapter = tensor_files.load_bytes(store.get_bytes(storage.join(uri, ADAPTER)), f"{uri}/{ADAPTER}")
        state = tensor_files.read_state(
            store.get_bytes(storage.join(uri, STATE_TENSORS)),
            store.get_bytes(storage.join(uri, STATE_JSON)),
            f"{uri}/{STATE_TENSORS}",
        )
    except (storage.MissingObjectError, tensor_files.TensorFileError) as err:
        raise UnusableCheckpointError(f"checkpoint {uri} cannot be resumed from: {err}") from err
    if not isinstance(state, dict):
        raise UnusableCheckpointError(f"checkpoint {uri} cannot be resumed from: its state is not a mapping")
    val_loss = _val_loss(store, run_uri, step)
    return Checkpoint(step, adapter, state, None if val_loss == math.inf else val_loss)


def latest_checkpoint(store: storage.Storage, run_uri: str) -> Checkpoint | None:
    """The newest complete checkpoint that loads; the ones that do not are skipped with a warning."""
    for step in reversed(complete_steps(store, run_uri)):
        try:
            return load_checkpoint(store, run_uri, step)
        except UnusableCheckpointError as err:
            log.warning("%s; trying the one before", err)
    return None
