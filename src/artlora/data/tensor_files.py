"""Tensors as bytes without pickle: safetensors whose bytes follow from their content alone, and nested state
(dicts, lists, tuples, numbers, strings and tensors, as an optimizer's `state_dict` is) as tensors plus JSON.

safetensors writes its header's `__metadata__` in the order of a hash map that varies from process to process, so
the same tensors gave different bytes (and different checksums) in two runs. `save_bytes` writes the header with
sorted keys instead; the tensor bytes, which safetensors lays out in a fixed order, are kept as they are.

Nothing here unpickles: a file that is not safetensors, or a JSON skeleton that names a tensor the file lacks, is
refused with `TensorFileError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

# Tags of the JSON skeleton for what JSON cannot say itself; a plain JSON object never has a key starting "__".
_TENSOR, _TUPLE, _DICT = "__tensor__", "__tuple__", "__dict__"


class TensorFileError(ValueError):
    """Bytes that are not the safetensors file or state they should be."""


def save_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """A safetensors file of `tensors` whose bytes are the same in every process for the same content."""
    data = save(dict(tensors), metadata=dict(metadata) if metadata else None)
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the tensor bytes start 8-byte aligned, as safetensors writes them
    return len(text).to_bytes(8, "little") + text + data[8 + length :]


def load_bytes(data: bytes, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; TensorFileError naming `what` if the bytes are not one."""
    try:
        return load(data)
    except (SafetensorError, ValueError) as err:
        raise TensorFileError(f"{what} is not a readable safetensors file ({err})") from None


# -- nested state -----------------------------------------------------------------------------------------


def flatten(state: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """(tensors by name, JSON-able skeleton): each tensor in `state` becomes {"__tensor__": name} (a CPU copy is
    stored), tuples {"__tuple__": [...]}, and dicts with keys other than plain strings {"__dict__": [[k, v], ...]}
    (an optimizer's state is keyed by parameter number)."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            name = f"t{len(tensors)}"
            # A copy: safetensors refuses tensors that share memory, and views of one buffer can occur.
            tensors[name] = value.detach().to("cpu", copy=True).contiguous()
            return {_TENSOR: name}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, list | tuple):
            items = [encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
            return {_TUPLE: items} if isinstance(value, tuple) else items
        if isinstance(value, Mapping):
            if all(isinstance(key, str) and not key.startswith("__") for key in value):
                return {key: encode(item, f"{path}.{key}") for key, item in value.items()}
            return {_DICT: [[encode(key, path), encode(item, f"{path}[{key!r}]")] for key, item in value.items()]}
        raise TypeError(f"cannot store {type(value).__name__} at {path or 'the top'} of the state as tensors + JSON")

    return tensors, encode(state, "")


def unflatten(tensors: Mapping[str, torch.Tensor], skeleton: Any) -> Any:
    """The state that `flatten` took apart; TensorFileError if the skeleton names a tensor that is not there."""

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1 and next(iter(value)).startswith("__"):
            tag, content = next(iter(value.items()))
            if tag == _TENSOR:
                if content not in tensors:
                    raise TensorFileError(f"the state names tensor {content!r}, which its file does not hold")
                return tensors[content]
            if tag == _TUPLE:
                return tuple(decode(item) for item in content)
            if tag == _DICT:
                return {_hashable(decode(key)): decode(item) for key, item in content}
            raise TensorFileError(f"unknown tag {tag!r} in the state")
        return {key: decode(item) for key, item in value.items()}

    return decode(skeleton)


def _hashable(key: Any) -> Any:
    if isinstance(key, list | dict | torch.Tensor):
        raise TensorFileError(f"a dict key in the state is a {type(key).__name__}")
    return key


def state_files(state: Any) -> tuple[bytes, bytes]:
    """(safetensors bytes, JSON bytes) holding `state`; both depend on its content (and dict order) alone."""
    tensors, skeleton = flatten(state)
    return save_bytes(tensors), json.dumps(skeleton, indent=1).encode()


def read_state(tensor_bytes: bytes, json_bytes: bytes, what: str) -> Any:
    """The state stored by `state_files`; TensorFileError naming `what` for anything else."""
    try:
        skeleton = json.loads(json_bytes)
    except ValueError as err:
        raise TensorFileError(f"{what}: its JSON is unreadable ({err})") from None
    return unflatten(load_bytes(tensor_bytes, what), skeleton)
