"""An adapter's files are named as diffusers names them, without importing diffusers where they are read."""

from __future__ import annotations

from diffusers.loaders.lora_base import LORA_WEIGHT_NAME_SAFE

from artlora.diffusion.adapter_files import DIFFUSERS_FILE


def test_the_diffusers_layout_file_is_the_one_diffusers_loads():
    assert DIFFUSERS_FILE == LORA_WEIGHT_NAME_SAFE
