"""A contact sheet: painted images in a grid, each with its prompt and seed written under it, to compare at a glance.

Every cell has the same size (the largest image, at least MIN_CELL_WIDTH wide so a caption can be read, and a
caption band of CAPTION_LINES lines and padding), so the sheet is `columns * cell width` by `rows * cell height` pixels.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

MIN_CELL_WIDTH = 160  # pixels: room for about 25 characters of caption
CAPTION_LINES = 3  # the prompt's (a longer one is cut, with an ellipsis) and the seed's
LINE_HEIGHT = 12  # pixels per caption line (PIL's built-in font is 10 px high)
PADDING = 4  # pixels around each image and caption
CHAR_WIDTH = 6  # pixels per character, a little more than PIL's built-in font takes on average


@dataclass(frozen=True)
class Cell:
    image: Image.Image
    prompt: str
    seed: int


def columns_for(count: int) -> int:
    """As many columns as rows, or one more: a sheet close to square."""
    return max(1, math.ceil(math.sqrt(count)))


def cell_size(cells: list[Cell]) -> tuple[int, int]:
    width = max(MIN_CELL_WIDTH, max(cell.image.width for cell in cells) + 2 * PADDING)
    height = max(cell.image.height for cell in cells) + 3 * PADDING + CAPTION_LINES * LINE_HEIGHT
    return width, height


def contact_sheet(cells: list[Cell]) -> Image.Image:
    """The cells row by row, left to right, on white; each image centred at the top of its cell."""
    columns = columns_for(len(cells))
    rows = math.ceil(len(cells) / columns)
    width, height = cell_size(cells)
    sheet = Image.new("RGB", (columns * width, rows * height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    caption_top = max(cell.image.height for cell in cells) + 2 * PADDING  # the same in every cell: aligned rows
    for index, cell in enumerate(cells):
        left, top = (index % columns) * width, (index // columns) * height
        sheet.paste(cell.image.convert("RGB"), image_position(cell, left, top, width))
        for line, text in enumerate(caption_lines(cell, width)):
            draw.text((left + PADDING, top + caption_top + line * LINE_HEIGHT), text, fill="black", font=font)
    return sheet


def image_position(cell: Cell, left: int, top: int, width: int) -> tuple[int, int]:
    """Where the cell's image goes: centred across the cell, PADDING below its top."""
    return left + (width - cell.image.width) // 2, top + PADDING


def caption_lines(cell: Cell, width: int) -> list[str]:
    """The prompt wrapped to the cell's width (cut with "..." when longer), then the seed on a line of its own, so
    that a long prompt never hides it: at most CAPTION_LINES lines."""
    characters = max(4, (width - 2 * PADDING) // CHAR_WIDTH)
    prompt = textwrap.wrap(cell.prompt, characters, max_lines=CAPTION_LINES - 1, placeholder="...")
    return [*prompt, f"seed {cell.seed}"]
