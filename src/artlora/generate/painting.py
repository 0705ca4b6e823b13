"""A base model with a style adapter loaded once, painting one image per (prompt, seed), on the CPU or a GPU.

The noise comes from a CPU generator seeded per image, so a seed gives the same starting noise on any device;
the images then agree across devices up to the device's arithmetic (and half precision's rounding on a GPU).
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from artlora.diffusion import loading, painting
from artlora.diffusion.adapters import ADAPTER_NAME, load_adapter
from artlora.diffusion.device import default_device
from artlora.generate.settings import GenerateError, Settings

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def choose_device(name: str | None) -> torch.device:
    """The device asked for, else the GPU when there is one, else the CPU."""
    if not name:
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise GenerateError(f"unknown device {name!r} (give cpu, cuda or cuda:N)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GenerateError(f"device {name!r} asked for, but torch sees no CUDA GPU here (use --device cpu)")
    return device


def choose_precision(device: torch.device, precision: str) -> torch.dtype:
    """`auto`: bf16 on a GPU that has it, else fp16 on a GPU; fp32 on the CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision not in PRECISIONS:
        raise GenerateError(f"unknown precision {precision!r} (choose auto, {', '.join(PRECISIONS)})")
    if precision == "fp16" and device.type == "cpu":
        raise GenerateError("fp16 needs a GPU and this one runs on the CPU (use fp32, or bf16: slower, less exact)")
    return PRECISIONS[precision]


class Painter:
    """The base model and the adapter, on one device, every module in eval mode."""

    def __init__(self, base_model: str, adapter: str | Path, device: str | None = None, precision: str = "auto"):
        self.device = choose_device(device)
        self.dtype = choose_precision(self.device, precision)
        self.pipe = loading.load_pipeline(base_model, torch_dtype=self.dtype)
        load_adapter(self.pipe, adapter)
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)  # the caller shows progress per image
        self.strength = 1.0

    @torch.no_grad()
    def paint(self, prompt: str, seed: int, settings: Settings, size: tuple[int, int] | None = None) -> Image.Image:
        """One image; `size` is (width, height) in pixels, by default the base model's own."""
        if settings.strength != self.strength:
            self.pipe.set_adapters([ADAPTER_NAME], adapter_weights=[settings.strength])
            self.strength = settings.strength
        pixels = painting.paint(
            self.pipe,
            [prompt],
            [seed],
            resolution=size or self.default_size,
            steps=settings.steps,
            guidance=settings.guidance,
            negative_prompt=settings.negative_prompt,
        )
        return Image.fromarray(pixels[0])

    @property
    def default_size(self) -> tuple[int, int]:
        """(width, height) the base model was trained at: its latent size times the VAE's downscaling."""
        # Newer pipelines (SDXL, SD3, Flux) state their latent size; Stable Diffusion 1/2 keep it in the UNet.
        latent = getattr(self.pipe, "default_sample_size", None) or self.pipe.unet.config.sample_size
        side = latent * self.pipe.vae_scale_factor
        return side, side

    @property
    def precision(self) -> str:
        return next(name for name, dtype in PRECISIONS.items() if dtype == self.dtype)
