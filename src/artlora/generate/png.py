"""PNG files that say how they were made: prompt, seed, model version and settings in their text chunks.

Besides one chunk per item, a `parameters` chunk in the AUTOMATIC1111 format, which image viewers and web UIs
read to show (and reuse) the settings of an image.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def encode(image: Image.Image, text: Mapping[str, str]) -> bytes:
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)  # tEXt when Latin-1 can hold it, else iTXt (UTF-8)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def text_chunks(prompt: str, seed: int, model: str, settings: Mapping[str, object]) -> dict[str, str]:
    """The chunks of one image: `prompt`, `negative_prompt`, `seed`, `model`, `settings` (JSON) and `parameters`."""
    negative = str(settings.get("negative_prompt", ""))
    rest = {key: value for key, value in settings.items() if key != "negative_prompt"}
    parameters = "\n".join(
        [
            prompt,
            *([f"Negative prompt: {negative}"] if negative else []),
            f"Steps: {rest.get('steps')}, CFG scale: {rest.get('guidance')}, Seed: {seed}, "
            f"Lora strength: {rest.get('strength')}, Model: {model}",
        ]
    )
    return {
        "prompt": prompt,
        "negative_prompt": negative,
        "seed": str(seed),
        "model": model,
        "settings": json.dumps(rest, sort_keys=True),
        "parameters": parameters,
    }
