"""Reading a trained adapter back from the object store, as the tests compare adapters."""

from __future__ import annotations

import torch
from safetensors.torch import load

from artlora.io import storage
from artlora.stages.train import lora


def adapter_weights(store: storage.Storage, adapter_uri: str) -> dict[str, torch.Tensor]:
    """The diffusers-layout adapter file of a train result's adapter folder."""
    return load(store.get_bytes(storage.join(adapter_uri, lora.ADAPTER_FILE)))
