"""The style sheet: per style, real held-out images beside the base's and the LoRA's paintings of the same captions.

One picture that answers "does the LoRA paint my style?" at a glance: a row per style, three groups of images (real,
base, LoRA) under their headings, the style's name at the left. Written beside the report (`eval/styles.png`) and
to the run's artifacts; `make demo` copies it next to the report it keeps.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GROUPS = ("real", "base", "LoRA")
PER_GROUP = 4  # images of each group in a row
SCALE = 2  # the evaluation paints small images: shown larger, pixels kept sharp
LABEL_WIDTH = 96  # pixels for the style names
HEADING = 16  # pixels above the first row for the group names
GAP = 8  # pixels between groups and between rows


def style_sheet(
    styles: list[str],
    real: dict[str, np.ndarray],
    base: dict[str, np.ndarray],
    lora: dict[str, np.ndarray],
    per_group: int = PER_GROUP,
) -> Image.Image:
    """The sheet for `styles`; each of `real`, `base`, `lora` maps a style to uint8 images [n, h, w, 3] (the first
    `per_group` of each are shown; a group with fewer leaves its places white)."""
    size = SCALE * next(iter(real.values())).shape[1]
    group_width = per_group * size
    width = LABEL_WIDTH + len(GROUPS) * (group_width + GAP)
    height = HEADING + len(styles) * (size + GAP)
    sheet = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for g, name in enumerate(GROUPS):
        draw.text((LABEL_WIDTH + g * (group_width + GAP), 2), name, fill="black", font=font)
    for row, style in enumerate(styles):
        top = HEADING + row * (size + GAP)
        draw.text((4, top + size // 2 - 5), style, fill="black", font=font)
        for g, images in enumerate((real, base, lora)):
            for col, image in enumerate(images.get(style, [])[:per_group]):
                picture = Image.fromarray(image).resize((size, size), Image.Resampling.NEAREST)
                sheet.paste(picture, (LABEL_WIDTH + g * (group_width + GAP) + col * size, top))
    return sheet
