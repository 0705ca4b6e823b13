"""How far apart two sets of images are in style, measured without pretrained weights (so it runs anywhere).

Two distances between image sets (uint8 arrays [n, h, w, 3]):
- colour: the sliced Wasserstein distance between the sets' pixel colour distributions (colours projected on
  fixed random directions; the mean gap between the projections' quantiles);
- texture: the gap between Gram matrices of the features of a fixed, seeded random-weight conv net (random
  filters capture texture statistics well, as texture synthesis with random networks showed), relative to their
  size, summed over its three layers.

A style confusion matrix holds, in row i and column j, the distance from images made for style i to the held-out
images of style j. A model that learned the styles puts each row's minimum on the diagonal.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MEASURES = ("colour", "texture")


class StyleDistance:
    def __init__(self, seed: int = 0, directions: int = 64, quantiles: int = 128):
        gen = torch.Generator().manual_seed(seed)
        d = torch.randn(directions, 3, generator=gen)
        self.directions = d / d.norm(dim=1, keepdim=True)
        self.quantiles = torch.linspace(0, 1, quantiles)
        shapes = ((3, 32, 1), (32, 64, 2), (64, 64, 2))  # (in, out, stride)
        self.filters = []
        for cin, cout, stride in shapes:
            weight = torch.randn(cout, cin, 3, 3, generator=gen) * (2 / (9 * cin)) ** 0.5  # He init
            self.filters.append((weight, torch.randn(cout, generator=gen) * 0.1, stride))

    def _colours(self, images: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(images.reshape(-1, 3)).float() / 255
        return torch.quantile(pixels @ self.directions.T, self.quantiles, dim=0)

    def _grams(self, images: np.ndarray) -> list[torch.Tensor]:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        grams = []
        for weight, bias, stride in self.filters:
            x = F.relu(F.conv2d(x, weight, bias, stride=stride, padding=1))
            features = x.flatten(2)
            grams.append((features @ features.transpose(1, 2) / features.shape[-1]).mean(0))
        return grams

    def summary(self, images: np.ndarray) -> dict:
        """What the distances compare, computed once per set."""
        return {"colour": self._colours(images), "texture": self._grams(images)}

    @staticmethod
    def between(a: dict, b: dict) -> dict[str, float]:
        colour = (a["colour"] - b["colour"]).abs().mean().item()
        texture = sum(
            ((ga - gb).norm() / (0.5 * (ga.norm() + gb.norm()) + 1e-12)).item()
            for ga, gb in zip(a["texture"], b["texture"], strict=True)
        )
        return {"colour": colour, "texture": texture}

    def matrices(self, rows: list[np.ndarray], columns: list[np.ndarray]) -> dict[str, np.ndarray]:
        """{measure: [len(rows), len(columns)]} distances from each row set to each column set."""
        row_stats, column_stats = map(self.summary, rows), [self.summary(c) for c in columns]
        out = {m: np.zeros((len(rows), len(columns))) for m in MEASURES}
        for i, a in enumerate(row_stats):
            for j, b in enumerate(column_stats):
                for measure, value in self.between(a, b).items():
                    out[measure][i, j] = value
        return out


def combined(matrices: dict[str, np.ndarray], scales: dict[str, float]) -> np.ndarray:
    """Colour and texture distances added, each in units of its scale (see `scales`)."""
    return np.sum([matrices[m] / scales[m] for m in MEASURES], axis=0)


def scales(reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Each measure's mean distance between different styles' real images: the unit `combined` counts in. With
    one style there is no other style: the distance between its own real images (training to held-out) is the
    unit, so that a single style's distances, and its style movement, still count."""
    count = len(reference[MEASURES[0]])
    chosen = ~np.eye(count, dtype=bool) if count > 1 else np.ones((1, 1), dtype=bool)
    return {m: float(reference[m][chosen].mean()) or 1.0 for m in MEASURES}


def diagonal_minima(matrix: np.ndarray) -> list[bool]:
    """Per row: does the diagonal hold the row's minimum (is style i's image set closest to style i)?"""
    return [bool(np.argmin(row) == i) for i, row in enumerate(matrix)]
