"""The one interface every base-model family implements: everything that differs between Stable Diffusion 1.x/2.x,
SDXL, SD 3.5 and Flux.1 sits behind it, and stages, evaluate, generate and the benchmarks ask it.

A family answers, for its bases:
- loading: which diffusers pipeline class to load and how to recognise its folders, single files and denoisers;
- captions: its text encoders (`TextEncoders`), what the text cache stores per caption and the cache identity;
- the objective: the training scheduler, timestep sampling, noising, the target, per-sample loss weights and the
  x0 the model's output implies; the denoiser's call (`predict`) with its conditioning;
- the held-out loss's fixed timesteps (`heldout_timesteps`);
- LoRA: the target groups of the denoiser and the text encoders' targets, the diffusers-layout save, and the
  single-file layout other tools load (`single_file`);
- painting: extra pipeline arguments (the LoRA scale's keyword);
- `build_tiny`: a tiny random pipeline of the family, for tests, the demo and CPU benchmarks.
The shared foundations are `unet.UNetFamily` (epsilon/v-prediction under a DDPM schedule) and `flow.FlowFamily`
(rectified flow matching).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from artlora.data.latents import LatentGroup
    from artlora.diffusion.text_encoding import TextEncoders

Parts = Mapping[str, torch.nn.Module]  # pipeline component name -> component with its LoRA adapter


def bias_toward_noise(u: torch.Tensor, config) -> torch.Tensor:
    """The family's draw u in (0, 1) (1 = pure noise) with `train.timestep_bias` applied: a monotone map, so
    each family's own density keeps its order. high_noise: 1 - (1 - u)^s, low_noise: u^s (s =
    `timestep_bias_strength`; from a uniform u, s = 3 is the cubic draw of ai-toolkit and the T2I-Adapter paper,
    mean 3/4 or 1/4 instead of 1/2); 'none' returns u itself."""
    strength = config.timestep_bias_strength
    if config.timestep_bias == "high_noise":
        return 1 - (1 - u) ** strength
    if config.timestep_bias == "low_noise":
        return u**strength
    return u


@dataclass(frozen=True)
class TextOptions:
    """How captions are encoded where a family has a choice (SD 3.5, Flux.1): the T5 token length (None: the
    family's default) and whether SD 3.5 reads T5 at all (without it, zeros in its place, as its pipeline does);
    `encoders=False` loads no text encoder at all, where the captions come from the text cache, and
    `denoiser=False` no denoiser where only captions and latents are made (augment), as far as the family allows."""

    max_t5_length: int | None = None
    t5: bool = True
    encoders: bool = True
    denoiser: bool = True


NO_OPTIONS = TextOptions()


class Family(abc.ABC):
    """A base-model family. Subclasses set the class attributes and implement the abstract methods (a family
    that misses one cannot be made)."""

    name: ClassVar[str]  # the registry key, also written into latent-cache indexes ("architecture")
    label: ClassVar[str]  # how messages name it
    denoiser: ClassVar[str]  # the pipeline component that gets the LoRA adapter: "unet" or "transformer"
    # Per caption in the text cache: "hidden" [tokens, dim] always, "pooled" [dim] when the denoiser takes one.
    cached_text: ClassVar[tuple[str, ...]] = ("hidden",)
    time_ids: ClassVar[bool] = False  # whether each view carries size/crop conditioning (SDXL)
    # Named groups of denoiser modules (peft matches names against the end of each module path).
    target_groups: ClassVar[dict[str, tuple[str, ...]]] = {}
    text_encoder_targets: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "out_proj")
    # The pipeline's text encoder components (what `TextOptions(encoders=False)` leaves unloaded).
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder",)
    # Pipeline keyword that scales a loaded LoRA for one call.
    lora_scale_argument: ClassVar[str] = "cross_attention_kwargs"

    # -- loading -------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def pipeline_class(self) -> Any:  # a diffusers pipeline class (Any to mypy: diffusers is untyped here)
        raise NotImplementedError

    @abc.abstractmethod
    def owns_pipeline_name(self, class_name: str) -> bool:
        """Whether a model_index.json `_class_name` is one of this family's pipelines."""
        raise NotImplementedError

    @abc.abstractmethod
    def owns_single_file(self, keys: list[str]) -> bool:
        """Whether an original-layout checkpoint's tensor names are this family's."""
        raise NotImplementedError

    @abc.abstractmethod
    def owns(self, denoiser: torch.nn.Module) -> bool:
        """Whether a denoiser (UNet or transformer) is this family's."""
        raise NotImplementedError

    def load_options(self, text: TextOptions = NO_OPTIONS) -> dict[str, Any]:
        """Extra keyword arguments of from_pretrained / from_single_file (`text`: encoders that may stay out)."""
        return {} if text.encoders else dict.fromkeys(self.text_encoder_names)

    # -- captions ------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def text_encoders(self, pipe, options: TextOptions = NO_OPTIONS) -> TextEncoders:
        raise NotImplementedError

    def index_fields(self) -> dict[str, str]:
        """What a latent-cache index records of the family (`data.latent_cache` reads it back)."""
        return {"architecture": self.name}

    @abc.abstractmethod
    def text_identity(self, pipe, options: TextOptions = NO_OPTIONS) -> str:
        """What the cached caption states depend on: every encoder, tokenizer and how their outputs combine."""
        raise NotImplementedError

    def check_config(self, config) -> None:
        """Refuse train settings this family cannot honour (a ConfigError naming the field), rather than ignore
        them."""
        return None  # a family that honours every setting refuses nothing

    # -- the objective -------------------------------------------------------------------------------------

    @abc.abstractmethod
    def training_scheduler(self, pipe):
        raise NotImplementedError

    @abc.abstractmethod
    def sample_timesteps(self, scheduler, shape: torch.Size, generator: torch.Generator, config) -> torch.Tensor:
        """Training timesteps for latents of `shape` (one per sample), on the CPU, from the generator only (so a
        resumed run draws the same); `config` is the TrainConfig (timestep density and bias settings: a family
        applies `bias_toward_noise` to its draw)."""
        raise NotImplementedError

    @abc.abstractmethod
    def add_noise(self, scheduler, latents, noise, timesteps) -> torch.Tensor:
        raise NotImplementedError

    @abc.abstractmethod
    def target(self, scheduler, latents, noise, timesteps) -> torch.Tensor:
        raise NotImplementedError

    @abc.abstractmethod
    def loss_weights(self, scheduler, timesteps: torch.Tensor, config) -> torch.Tensor | None:
        """Per-sample weights of the MSE, or None for a plain mean."""
        raise NotImplementedError

    @abc.abstractmethod
    def predicted_x0(self, scheduler, noisy, output, timesteps) -> torch.Tensor:
        """The clean latent implied by the model's output (fp32): what the perceptual term decodes."""
        raise NotImplementedError

    @abc.abstractmethod
    def heldout_timesteps(self, scheduler, timestep: int, count: int) -> torch.Tensor:
        """The held-out loss's fixed timestep `timestep` (0-999, as configs give it) for `count` samples."""
        raise NotImplementedError

    def conditioning(
        self, group: LatentGroup, rows: torch.Tensor | slice, pooled: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """What the denoiser takes besides the caption states, for some views of a group (`pooled` overrides the
        group's, e.g. after caption dropout)."""
        return {}

    @abc.abstractmethod
    def predict(self, model, noisy, timesteps, text, conditioning: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The denoiser's output on the noisy latents (the layout of the target)."""
        raise NotImplementedError

    # -- LoRA ----------------------------------------------------------------------------------------------

    def save_lora(self, layers: dict[str, Any], directory: str | Path) -> None:
        """Write `<component>_lora_layers` / `<component>_lora_adapter_metadata` in the diffusers layout."""
        self.pipeline_class().save_lora_weights(str(directory), **layers, safe_serialization=True)

    @abc.abstractmethod
    def single_file(
        self, parts: Parts, prediction_type: str, title: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The adapter as the one file other tools load (kohya/ComfyUI keys) and that file's metadata; raises
        `UnsupportedAdapterError` (diffusion.lora_keys) when this layout cannot express it."""
        raise NotImplementedError

    # -- painting and tests --------------------------------------------------------------------------------

    def paint_arguments(self, lora_scale: float | None) -> dict[str, Any]:
        return {} if lora_scale is None else {self.lora_scale_argument: {"scale": lora_scale}}

    @abc.abstractmethod
    def build_tiny(self, seed: int = 0, **options):
        """A tiny pipeline of this family with random weights, identical for equal seeds."""
        raise NotImplementedError
