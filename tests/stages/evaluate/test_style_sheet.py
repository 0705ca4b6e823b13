"""The style sheet puts each style's real images, the base's and the LoRA's in that style's row, under their group."""

import numpy as np

from artlora.stages.evaluate.style_sheet import GAP, GROUPS, HEADING, LABEL_WIDTH, SCALE, style_sheet

SIZE = 8  # pixels of the evaluation's images here


def solid(value: int, count: int) -> np.ndarray:
    return np.full((count, SIZE, SIZE, 3), value, dtype=np.uint8)


def test_every_image_lands_in_its_styles_row_and_its_groups_column():
    styles = ["pointillist", "woodcut"]
    # A distinct grey per (style, group): any image in the wrong place reads as another value.
    shade = {(s, g): 20 + 40 * (2 * i + j) for i, s in enumerate(styles) for j, g in enumerate(GROUPS[:2])}
    real = {s: solid(shade[s, "real"], 5) for s in styles}
    base = {s: solid(shade[s, "base"], 3) for s in styles}  # fewer than a row holds: the rest stays white
    lora = {"pointillist": solid(250, 4)}  # no LoRA images of woodcut
    sheet = np.asarray(style_sheet(styles, real, base, lora, per_group=4))
    size, group = SCALE * SIZE, 4 * SCALE * SIZE
    assert sheet.shape == (HEADING + 2 * (size + GAP), LABEL_WIDTH + 3 * (group + GAP), 3)

    def at(row: int, g: int, col: int) -> int:
        top, left = HEADING + row * (size + GAP), LABEL_WIDTH + g * (group + GAP) + col * size
        cell = sheet[top : top + size, left : left + size]
        assert (cell == cell[0, 0]).all(), "an image is split over two places"
        return int(cell[0, 0, 0])

    for row, style in enumerate(styles):
        assert [at(row, 0, col) for col in range(4)] == [shade[style, "real"]] * 4
        assert [at(row, 1, col) for col in range(4)] == [shade[style, "base"]] * 3 + [255]
    assert [at(0, 2, col) for col in range(4)] == [250] * 4
    assert [at(1, 2, col) for col in range(4)] == [255] * 4
