"""LyCORIS adapters (peft's LoKr and LoHa) in the diffusers layout the train stage writes: recognised by their
tensor names and loaded into a pipeline through peft, since diffusers' `load_lora_weights` reads only LoRA.

The file is what `save_lora_weights` writes: `<component>.<peft key>` tensors (`unet.<module>.lokr_w1`, ...) and
the `lora_adapter_metadata` entry, diffusers' flattened form of each component's peft config
(`unet.peft_type`, `unet.r`, ...). The single file for the UIs (`lora_unet_<module>.lokr_w1`, ...) is not read
here: it is for AUTOMATIC1111, Forge and ComfyUI, and `kind` refuses it with a clear message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
from peft import PeftConfig
from peft.utils import set_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file

from artlora.errors import ArtloraError

# The tensor names of each kind's weights, as peft and the LyCORIS single file both name them.
KINDS = {
    "lokr": ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"),
    "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"),
}


class LycorisError(ArtloraError):
    """A LoKr/LoHa adapter file artlora cannot load."""


def kind_of_key(key: str) -> str | None:
    """The kind ("lokr" or "loha") whose weights a tensor name names, else None."""
    suffix = key.rsplit(".", 1)[-1]
    return next((kind for kind, names in KINDS.items() if suffix in names), None)


def kind(path: str | Path) -> str | None:
    """The LyCORIS kind of an adapter file in the diffusers layout ("lokr" or "loha"), None for a LoRA file;
    a LyCORIS single file in the UIs' layout is refused."""
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
    kinds = {found for found in map(kind_of_key, keys) if found}
    if not kinds:
        return None
    if any(key.startswith("lora_") for key in keys):
        raise LycorisError(
            f"{Path(path).name} is a LoKr/LoHa file in the layout of AUTOMATIC1111 and ComfyUI, which artlora does "
            "not load (load the diffusers-layout file beside it: --layout diffusers)"
        )
    if len(kinds) > 1:
        raise LycorisError(f"{Path(path).name} mixes LoKr and LoHa weights (give an adapter written by artlora)")
    return kinds.pop()


def load(pipe, path: str | Path, adapter_name: str) -> None:
    """Attach the file's adapter to each pipeline component it has weights for, under `adapter_name`, with the
    peft config recorded in the file, and load its weights (every weight of the adapter, none left over)."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as handle:
        packed = (handle.metadata() or {}).get(LORA_ADAPTER_METADATA_KEY)
    if packed is None:
        raise LycorisError(
            f"{path.name} records no adapter config ({LORA_ADAPTER_METADATA_KEY}); give a file "
            "written by artlora's train stage"
        )
    configs, tensors = json.loads(packed), load_file(path)
    for component in sorted({key.split(".", 1)[0] for key in tensors}):
        prefix = component + "."
        module: Any = getattr(pipe, component, None)  # a diffusers or transformers model: peft's add_adapter
        if not hasattr(module, "add_adapter"):
            raise LycorisError(f"{path.name} holds weights for {component!r}, which this pipeline has not")
        config = PeftConfig.from_peft_type(
            **{key[len(prefix) :]: value for key, value in configs.items() if key.startswith(prefix)}
        )
        module.add_adapter(config, adapter_name=adapter_name)
        own = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
        result: Any = set_peft_model_state_dict(module, own, adapter_name=adapter_name)
        missing = [key for key in result.missing_keys if adapter_name in key and kind_of_key(key.rsplit(".", 1)[0])]
        if result.unexpected_keys or missing:
            raise LycorisError(
                f"{path.name} does not match the {component} it was loaded into: unexpected "
                f"{list(result.unexpected_keys)[:3]}, missing {missing[:3]} (load it into its own base model)"
            )
