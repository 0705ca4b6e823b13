"""Paint with a registered style: `artlora generate --model models:/NAME@champion --prompt ...`.

The version's lineage names its base model; its adapter is fetched once into the local cache
(`registry.files`), loaded with diffusers' `load_lora_weights` at the strength asked for, every module in eval
mode (LoRA dropout off), and each image is written as a PNG that records its prompt, seed, model version and
settings.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from artlora.data import lineage
from artlora.diffusion.adapters import adapter_file
from artlora.generate import png
from artlora.generate.painting import GenerateError, Painter, Settings
from artlora.registry import files, references


@dataclass(frozen=True)
class Request:
    model: str  # a model reference: models:/NAME@alias, NAME/VERSION, ...
    prompt: str
    out: Path
    settings: Settings = field(default_factory=Settings)
    seed: int = 0  # the first image's seed; the next ones count up from it
    count: int = 1
    layout: str = "diffusers"  # which of the version's adapter files to load: "diffusers" or "kohya"
    device: str | None = None  # default: the GPU when there is one
    precision: str = "auto"


def generate(request: Request) -> list[Path]:
    """Paint `count` images of the prompt with the referenced model version; the PNG files written."""
    version = references.resolve(request.model)
    base_model = version.tags.get(lineage.BASE_MODEL)
    if not base_model:
        raise GenerateError(
            f"{version.uri} has no {lineage.BASE_MODEL} tag, so its base model is unknown (register the adapter "
            "with `artlora register`, which records it)"
        )
    adapter = adapter_file(files.adapter_folder(version), request.layout)
    painter = Painter(base_model, adapter, request.device, request.precision)
    request.out.mkdir(parents=True, exist_ok=True)
    settings = {**asdict(request.settings), "layout": request.layout, "precision": painter.precision}
    settings |= {"base_model": base_model, "device": painter.device.type}
    written = []
    for seed in tqdm(range(request.seed, request.seed + request.count), desc="generate", unit="image"):
        image = painter.paint(request.prompt, seed, request.settings)
        text = png.text_chunks(request.prompt, seed, version.uri, settings)
        path = request.out / f"{version.name}-v{version.version}-{_slug(request.prompt)}-{seed}.png"
        path.write_bytes(png.encode(image, text))
        written.append(path)
    return written


def _slug(text: str) -> str:
    """A prompt as a short file-name part: `A woodcut, of a tree!` -> `a-woodcut-of-a-tree`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].rstrip("-") or "image"
