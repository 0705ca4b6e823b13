"""The images evaluation compares: the dataset's own, per style and split, and the ones a pipeline paints.

All are uint8 arrays [n, size, size, 3] at the evaluation's resolution (centre square crop, then resized), so
every distance compares like with like.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from artlora.data import dataset, images
from artlora.diffusion import painting
from artlora.io import storage


def _square(image: Image.Image, size: int) -> np.ndarray:
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


Sets = dict[str, tuple[np.ndarray, list[str]]]  # style -> (images, captions)


def _reader(dataset_uri: str, size: int) -> Callable[[list], list[np.ndarray]]:
    """Reads dataset items as evaluation-sized squares, several at once."""
    store = storage.get_storage()
    background = dataset.load_background(dataset_uri)
    return lambda items: storage.parallel(
        lambda item: _square(images.open_rgb(store.get_bytes(item.file), background), size), items
    )


def dataset_images(dataset_uri: str, size: int, per_style: int) -> dict[str, Sets]:
    """{split: {style: (images, captions)}}, at most `per_style` images of each style per split, in manifest
    order (ingest's order, so the same images every time)."""
    chosen: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for item in dataset.load_items(dataset_uri):
        picked = chosen[item.split][item.style]
        if len(picked) < per_style:
            picked.append(item)
    flat = [item for split in chosen.values() for items in split.values() for item in items]
    by_file = {item.file: array for item, array in zip(flat, _reader(dataset_uri, size)(flat), strict=True)}
    return {
        split: {
            style: (np.stack([by_file[item.file] for item in items]), [item.caption for item in items])
            for style, items in sorted(styles.items())
        }
        for split, styles in chosen.items()
    }


def training_images(dataset_uri: str, size: int, chunk: int = 256) -> Iterator[np.ndarray]:
    """Every training image, `chunk` at a time in manifest order: what memorisation compares with, read so that
    memory stays bounded however large the dataset."""
    read = _reader(dataset_uri, size)
    items = [item for item in dataset.load_items(dataset_uri) if item.split == "train"]
    for start in range(0, len(items), chunk):
        yield np.stack(read(items[start : start + chunk]))


def paint(pipe, prompts: list[str], seeds: list[int], config, lora_scale: float | None = None) -> np.ndarray:
    """One image per (prompt, seed) pair, uint8 [n, size, size, 3], at the evaluation's settings. `lora_scale`
    sets the loaded adapter's strength for these images only."""
    return painting.paint(
        pipe,
        prompts,
        seeds,
        resolution=config.resolution,
        steps=config.inference_steps,
        guidance=config.guidance_scale,
        lora_scale=lora_scale,
    )


@torch.no_grad()
def through_vae(vae, pictures: np.ndarray) -> np.ndarray:
    """The pictures encoded and decoded by the VAE: the best any image the model paints can match them."""
    x = torch.from_numpy(pictures).permute(0, 3, 1, 2).float().to(vae.device, vae.dtype) / 127.5 - 1
    decoded = vae.decode(vae.encode(x).latent_dist.mean).sample
    return ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
