"""Tensor files without pickle: the same content gives the same bytes in every process; training state goes through
safetensors plus JSON and comes back exactly, types included."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from artlora.data import shards, tensor_files
from artlora.data.tensor_files import TensorFileError

# safetensors ordered the metadata by a hash map seeded anew for every map in every process: packing the same
# tensors ten times in each of three processes used to give several different byte strings.
# Three processes: this one and two others (each start pays torch's import, seconds of CPU).
_DIGESTS = """
import hashlib, torch
from artlora.data import shards, tensor_files
def digests():
    tensors = {"latents": torch.arange(24.0).reshape(2, 3, 4), "b": torch.ones(3, dtype=torch.float16)}
    state = {"step": 3, "betas": (0.9, 0.999), "state": {0: {"exp_avg": torch.zeros(2)}}, "rng": torch.ones(4)}
    found = []
    for _ in range(10):
        for data in (shards.pack("key-a", tensors), *tensor_files.state_files(state)):
            found.append(hashlib.sha256(data).hexdigest())
    return found
if __name__ == "__main__":
    print(*digests())
"""


def test_shards_and_state_files_are_byte_identical_across_processes():
    runs = [subprocess.Popen([sys.executable, "-c", _DIGESTS], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    here: dict = {}
    exec(_DIGESTS, here)  # not as __main__: defines digests() only
    digests = [here["digests"](), *(run.communicate(timeout=120)[0].split() for run in runs)]
    assert all(len(found) == 30 for found in digests), digests
    shard_digests = {digest for found in digests for digest in found[0::3]}
    state_digests = {digest for found in digests for digest in found[1::3] + found[2::3]}
    assert len(shard_digests) == 1 and len(state_digests) == 2


def test_the_deterministic_header_still_loads_as_safetensors():
    tensors = {"z": torch.randn(3, 5), "a": torch.arange(4, dtype=torch.int64), "m": torch.tensor(True)}
    data = tensor_files.save_bytes(tensors, {"b": "2", "a": "1"})
    loaded = tensor_files.load_bytes(data, "test")
    assert all(
        torch.equal(loaded[name], value) and loaded[name].dtype == value.dtype for name, value in tensors.items()
    )
    assert data == tensor_files.save_bytes(dict(reversed(tensors.items())), {"a": "1", "b": "2"})
    assert shards.check(shards.pack("k", tensors), "k", tuple(tensors))


def trained_state() -> dict:
    """The state a checkpoint holds, from a real optimizer, schedule and scaler after two steps."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.99))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    for _ in range(2):
        scaler.scale(model(torch.randn(3, 4)).square().mean()).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
    return {
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": {"cpu": torch.get_rng_state()},
        "step": 2,
        "early_stopping": {"best_loss": math.inf, "best_step": None, "best_adapter": {"w": torch.ones(2, 2)}},
        "config": {"rank": 4, "targets": ["to_q", "to_k"]},
    }


def assert_same(a, b, path="state"):
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for key in a:
            assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), path


def test_training_state_round_trips_exactly():
    state = trained_state()
    tensors, skeleton = tensor_files.state_files(state)
    restored = tensor_files.read_state(tensors, skeleton, "test state")
    assert_same(state, restored)
    assert isinstance(next(iter(restored["optimizer"]["state"])), int)  # parameter numbers stay numbers
    assert restored["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.99)
    # What was restored drives an optimizer exactly like the original.
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    optimizer.load_state_dict(restored["optimizer"])
    assert_same(optimizer.state_dict(), state["optimizer"])


@pytest.mark.parametrize(
    ("tensors", "skeleton", "message"),
    [
        (b"\x80\x04K\x01.", b"{}", "not a readable safetensors file"),
        (tensor_files.save_bytes({"t0": torch.ones(1)}), b'{"w": {"__tensor__": "t9"}}', "does not hold"),
        (tensor_files.save_bytes({}), b"\x80\x04K\x01.", "JSON is unreadable"),
        (tensor_files.save_bytes({}), b'{"__code__": "x"}', "unknown tag"),
    ],
    ids=["pickle-as-tensors", "missing-tensor", "pickle-as-json", "unknown-tag"],
)
def test_anything_but_tensors_and_json_is_refused(tensors, skeleton, message):
    with pytest.raises(TensorFileError, match=message):
        tensor_files.read_state(tensors, skeleton, "planted state")


def test_state_that_json_cannot_hold_is_refused_when_written():
    with pytest.raises(TypeError, match=r"object at .a\[0\]"):
        tensor_files.state_files({"a": [object()]})
