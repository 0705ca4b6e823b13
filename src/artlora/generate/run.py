"""`artlora generate`'s work: resolve the version, check its base model's files, load base and adapter once, paint
every (prompt, seed) and write the PNGs (and a contact sheet). Loads torch and diffusers (through the painter)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from artlora import contracts
from artlora.data import lineage
from artlora.diffusion import base_files
from artlora.diffusion.adapters import adapter_file
from artlora.generate import png, sheet
from artlora.generate.painting import Painter
from artlora.generate.settings import GenerateError, Settings, check_size
from artlora.registry import files, references


@dataclass(frozen=True)
class Request:
    model: str  # a model reference: models:/NAME@alias, NAME/VERSION, ...
    prompts: str | tuple[str, ...]  # one prompt, or several painted in turn from one load of the model
    out: Path
    settings: Settings = field(default_factory=Settings)
    seed: int = 0  # the first image's seed of each prompt; the next ones count up from it
    count: int = 1  # images per prompt
    layout: str = "diffusers"  # which of the version's adapter files to load: "diffusers" or "kohya"
    device: str | None = None  # default: the GPU when there is one
    precision: str = "auto"
    width: int | None = None  # pixels, a multiple of 8; None: the base model's own size
    height: int | None = None
    contact_sheet: Path | None = None  # also write every image in one grid, captioned with its prompt and seed

    @property
    def prompt_list(self) -> list[str]:
        return [self.prompts] if isinstance(self.prompts, str) else list(self.prompts)


def generate(request: Request) -> list[Path]:
    """Paint `count` images of each prompt with the referenced model version, loading it once; the PNG files
    written (and the contact sheet last, when asked for)."""
    check_size("--width", request.width)
    check_size("--height", request.height)
    version = references.resolve(request.model)
    base_model = version.tags.get(lineage.BASE_MODEL)
    if not base_model:
        raise GenerateError(
            f"{version.uri} has no {lineage.BASE_MODEL} tag, so its base model is unknown (register the adapter "
            "with `artlora register`, which records it)"
        )
    adapter = adapter_file(files.adapter_folder(version), request.layout)
    base_files.verify(version.uri, base_model, version.tags.get(contracts.BASE_MANIFEST_TAG))
    painter = Painter(base_model, adapter, request.device, request.precision)
    request.out.mkdir(parents=True, exist_ok=True)
    settings = {**asdict(request.settings), "layout": request.layout, "precision": painter.precision}
    settings |= {"base_model": base_model, "device": painter.device.type}
    default_width, default_height = painter.default_size
    size = (request.width or default_width, request.height or default_height)
    settings |= {"width": size[0], "height": size[1]}
    cells, written = [], []
    for prompt, seed, name in tqdm(_jobs(request), desc="generate", unit="image"):
        image = painter.paint(prompt, seed, request.settings, size)
        path = request.out / f"{version.name}-v{version.version}-{name}-{seed}.png"
        path.write_bytes(png.encode(image, png.text_chunks(prompt, seed, version.uri, settings)))
        written.append(path)
        cells.append(sheet.Cell(image, prompt, seed))
    if request.contact_sheet is not None:
        request.contact_sheet.write_bytes(png.encode(sheet.contact_sheet(cells), {"model": version.uri}))
        written.append(request.contact_sheet)
    return written


def _jobs(request: Request) -> list[tuple[str, int, str]]:
    """(prompt, seed, file-name part) per image; prompts whose names would clash get their position added."""
    prompts = request.prompt_list
    slugs = [_slug(prompt) for prompt in prompts]
    names = [slug if slugs.count(slug) == 1 else f"{slug}-{index + 1}" for index, slug in enumerate(slugs)]
    seeds = range(request.seed, request.seed + request.count)
    return [(prompt, seed, name) for prompt, name in zip(prompts, names, strict=True) for seed in seeds]


def _slug(text: str) -> str:
    """A prompt as a short file-name part: `A woodcut, of a tree!` -> `a-woodcut-of-a-tree`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].rstrip("-") or "image"
