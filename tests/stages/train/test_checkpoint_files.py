"""Checkpoints hold safetensors and JSON only: a pickle planted in the bucket where a checkpoint would be is refused
(never run), and the run resumes from its own last checkpoint to the same adapter as an undisturbed run."""

from __future__ import annotations

import io
import os

import pytest
import torch
from adapter_files import adapter_weights

from artlora.config import with_inputs
from artlora.io import storage
from artlora.stages.train import checkpoints
from artlora.stages.train import run as train

pytestmark = pytest.mark.usefixtures("mlflow_db")


class Payload:
    """What an attacker plants: unpickling it creates a folder (standing in for any code at all)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def pickled(marker) -> bytes:
    buffer = io.BytesIO()
    torch.save({"optimizer": Payload(str(marker))}, buffer)
    return buffer.getvalue()


def plant(store: storage.Storage, root: str, step: int, files: dict[str, bytes]) -> None:
    """A complete-looking checkpoint: the given files, then the completion marker."""
    uri = checkpoints.checkpoint_uri(root, step)
    for name, data in files.items():
        store.put_bytes(storage.join(uri, name), data)
    store.mark_complete(uri, {"step": step, "val_loss": None})


def test_the_payload_would_run_if_unpickled(tmp_path):
    """The planted bytes are live: the loader artlora used before ran them."""
    marker = tmp_path / "ran"
    torch.load(io.BytesIO(pickled(marker)), weights_only=False)
    assert marker.is_dir()


def test_a_checkpoint_is_safetensors_and_json_only(store, bucket):
    root = storage.join(bucket, "runs", "files")
    state = {"step": 2, "run_id": "r", "betas": (0.9, 0.99), "state": {0: {"exp_avg": torch.ones(3)}}}
    checkpoints.save_checkpoint(store, root, checkpoints.Checkpoint(2, {"w": torch.ones(2)}, state), keep=2)
    uri = checkpoints.checkpoint_uri(root, 2)
    names = {found.rsplit("/", 1)[-1] for found in store.list(uri)}
    assert names == {"adapter.safetensors", "state.safetensors", "state.json", storage.COMPLETE_MARKER}
    loaded = checkpoints.load_checkpoint(store, root, 2)
    assert loaded.state["betas"] == (0.9, 0.99) and torch.equal(loaded.state["state"][0]["exp_avg"], torch.ones(3))


def test_a_planted_pickle_is_refused_and_the_run_resumes_exactly(small_config, latent_cache, store, tmp_path):
    config = with_inputs(small_config.train, cache_uri=latent_cache, max_steps=6, checkpoint_every=2)
    root = train.run_uri(config)
    undisturbed = adapter_weights(store, train.run(config).adapter_uri)

    # The run is cut off after its step-2 checkpoint: its later checkpoint and adapter are gone.
    store.delete_prefix(storage.join(root, "adapter"))
    store.delete_prefix(checkpoints.checkpoint_uri(root, 4))
    assert checkpoints.complete_steps(store, root) == [2]
    # Newer checkpoints appear, as whoever can write to the bucket could make them: the old pickle file, and a
    # pickle under the new files' names.
    marker = tmp_path / "payload-ran"
    adapter = store.get_bytes(storage.join(checkpoints.checkpoint_uri(root, 2), "adapter.safetensors"))
    plant(store, root, 3, {"adapter.safetensors": adapter, "state.pt": pickled(marker)})
    plant(
        store,
        root,
        5,
        {"adapter.safetensors": adapter, "state.safetensors": pickled(marker), "state.json": pickled(marker)},
    )

    resumed = train.run(config)
    assert not marker.exists(), "a pickle from the bucket was loaded"
    assert resumed.resumed_from == 2
    weights = adapter_weights(store, resumed.adapter_uri)
    assert weights.keys() == undisturbed.keys()
    assert all(torch.equal(weights[name], value) for name, value in undisturbed.items())
