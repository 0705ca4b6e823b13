"""The grid search's settings: which training settings vary, over which values, and how many trials run at once.

Each list replaces one `train:` setting for the trials; a setting without a list keeps its `train:` value in
every trial. `grid` runs every combination; `random` runs `draws` distinct combinations drawn with `seed`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from artlora.config.base import LeftOutAtDefault

# Searchable settings added after searches were made: left out of a search config's dumps while they list nothing
# (LeftOutAtDefault), so the configs digested and compiled before keep their digests.
ADDED_LATER = (
    *("ema_decay", "timestep_bias", "timestep_bias_strength", "loss", "huber_delta"),
    *("adapter", "preservation_weight"),
)
# The train settings a search may vary, in the order trials are labelled.
SEARCHABLE = (
    "learning_rate",
    "rank",
    "alpha",
    "dropout",
    "perceptual_weight",
    "max_steps",
    "lr_schedule",
    *ADDED_LATER,
)


class SearchConfig(LeftOutAtDefault):
    model_config = ConfigDict(frozen=True, extra="forbid")
    left_out_at_default = frozenset(ADDED_LATER)

    strategy: Literal["grid", "random"] = Field(
        "grid", description="'grid': every combination of the values below; 'random': `draws` of them"
    )
    draws: int | None = Field(
        None, ge=1, le=1024, description="'random' only: distinct combinations to try, drawn with the seed"
    )
    parallel: int = Field(
        2, ge=1, le=64, description="trials trained at once (each takes train.gpus GPUs on the cluster)"
    )
    learning_rate: tuple[float, ...] = Field((), description="peak learning rates to try (train.learning_rate)")
    rank: tuple[int, ...] = Field((), description="LoRA ranks to try (train.rank)")
    alpha: tuple[float, ...] = Field((), description="LoRA alphas to try (train.alpha)")
    dropout: tuple[float, ...] = Field((), description="LoRA dropouts to try, each in [0, 1) (train.dropout)")
    perceptual_weight: tuple[float, ...] = Field(
        (), description="LPIPS weights to try (train.perceptual_weight; 0 turns the term off)"
    )
    max_steps: tuple[int, ...] = Field((), description="optimizer steps to try (train.max_steps)")
    lr_schedule: tuple[Literal["linear", "cosine", "constant"], ...] = Field(
        (), description="learning-rate schedules to try (train.lr_schedule)"
    )
    # EMA, timestep bias and Huber loss
    ema_decay: tuple[float, ...] = Field((), description="adapter EMA decays to try, each in [0, 1) (train.ema_decay)")
    timestep_bias: tuple[Literal["none", "high_noise", "low_noise"], ...] = Field(
        (), description="timestep biases to try (train.timestep_bias)"
    )
    timestep_bias_strength: tuple[float, ...] = Field(
        (), description="timestep-bias exponents to try, each in [1, 10] (train.timestep_bias_strength)"
    )
    loss: tuple[Literal["mse", "huber"], ...] = Field((), description="per-element errors to try (train.loss)")
    huber_delta: tuple[float, ...] = Field(
        (), description="pseudo-Huber deltas to try, with train.loss: huber (train.huber_delta)"
    )
    adapter: tuple[Literal["lora", "lokr", "loha"], ...] = Field(
        (), description="adapter forms to try (train.adapter: lora, lokr, loha)"
    )
    preservation_weight: tuple[float, ...] = Field(
        (), description="output-preservation weights to try (train.preservation_weight; 0 turns the term off)"
    )

    @model_validator(mode="after")
    def _draws_with_random(self) -> SearchConfig:
        if self.strategy == "random" and self.draws is None:
            raise ValueError("strategy 'random' needs draws: the number of combinations to try")
        if self.strategy == "grid" and self.draws is not None:
            raise ValueError("draws is for strategy 'random'; a grid runs every combination")
        for name in SEARCHABLE:
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a value twice: {list(values)}")
        return self

    def space(self) -> dict[str, tuple]:
        """The settings that vary, with their values, in SEARCHABLE's order."""
        return {name: getattr(self, name) for name in SEARCHABLE if getattr(self, name)}
