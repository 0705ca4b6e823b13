"""The register stage's settings: the registered model and its gate.

The gate is a list of rules; a new version becomes `champion` when every rule passes, else `challenger`. A rule
either checks one metric of the run (its direction, its improvement over the base model and over the champion,
absolute bounds) or is one of the named rules: `no_memorisation` (no generated image was flagged as a near copy of
a training image: the evaluate stage's `memorised_images`), `no_style_regresses` (no style's held-out loss
`val_loss_lora/<style>` worse than the champion's by more than a margin) and `max_content_change` (a bound on the
evaluation's `content_change`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from artlora.config.base import BaseModelRef, LeftOutAtDefault, StageConfig

MEMORISATION_METRIC = "memorised_images"
CONTENT_CHANGE_METRIC = "content_change"  # evaluate's pixel change on prompts outside the styles (RMS)
STYLE_LOSS_PREFIX = "val_loss_lora/"  # evaluate's held-out loss per style: val_loss_lora/<style>
NAMED_RULES = ("no_memorisation", "no_style_regresses", "max_content_change")


class GateRule(LeftOutAtDefault):
    model_config = ConfigDict(frozen=True, extra="forbid")
    # Rules added after gates were written: left out of a rule's dump while unset, so the configs digested and
    # compiled before keep their digests.
    left_out_at_default = frozenset({"no_style_regresses", "max_content_change"})

    metric: str | None = Field(
        None, description="run metric this rule checks (e.g. val_loss_lora); not with no_memorisation"
    )
    direction: Literal["lower", "higher"] = Field("lower", description="which way the metric gets better")
    over_champion: float | None = Field(
        None,
        ge=0,
        description="must beat the champion's value by at least this fraction of it (0.02 = 2%; 0 = any margin); "
        "passes when there is no champion yet",
    )
    base_metric: str | None = Field(
        None, description="the base model's value of the same measure (e.g. val_loss_base), for over_base"
    )
    over_base: float | None = Field(
        None, ge=0, description="must beat base_metric by at least this fraction of it (0.02 = 2%; 0 = any margin)"
    )
    min: float | None = Field(None, description="absolute lower bound on the metric (inclusive)")
    max: float | None = Field(None, description="absolute upper bound on the metric (inclusive)")
    no_memorisation: bool = Field(
        False,
        description=f"pass only when the run's {MEMORISATION_METRIC} is 0 (fails, saying so, when the run has no "
        "such metric)",
    )
    no_style_regresses: float | None = Field(
        None,
        ge=0,
        le=1,
        description=f"no style's held-out loss ({STYLE_LOSS_PREFIX}<style>) worse than the champion's same-style "
        "value by more than this fraction of it (0 = no worse at all; 0.02 = up to 2% worse), like for like: only "
        "the styles both have; passes when there is no champion yet",
    )
    max_content_change: float | None = Field(
        None,
        ge=0,
        description=f"upper bound (inclusive) on the evaluation's {CONTENT_CHANGE_METRIC}: how much the adapter "
        "changes images of prompts outside the styles (RMS over pixels in [0, 1]); holds for the first version too",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> GateRule:
        named = [name for name in NAMED_RULES if getattr(self, name) is not None and getattr(self, name) is not False]
        if len(named) > 1:
            raise ValueError(f"{' and '.join(named)} are rules of their own: give each a rule of its own")
        if named:
            if self.metric is not None or self.checks():
                raise ValueError(f"a {named[0]} rule takes no metric and no thresholds: give it a rule of its own")
            return self
        if self.metric is None:
            raise ValueError(
                "a rule needs a metric (or one of no_memorisation: true, no_style_regresses: MARGIN, "
                "max_content_change: BOUND)"
            )
        if not self.checks():
            raise ValueError(f"rule on {self.metric} checks nothing: set over_champion, over_base, min or max")
        if (self.over_base is None) != (self.base_metric is None):
            raise ValueError(f"rule on {self.metric}: over_base and base_metric go together")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"rule on {self.metric}: min {self.min} is above max {self.max}")
        return self

    def checks(self) -> list[str]:
        """The checks this rule makes, by field name."""
        return [name for name in ("over_champion", "over_base", "min", "max") if getattr(self, name) is not None]

    @property
    def metric_name(self) -> str:
        """The metric a metric rule checks (every rule but a no_memorisation one has one)."""
        if self.metric is None:
            raise ValueError("a named rule (no_memorisation, ...) checks no metric of its own")
        return self.metric

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every run metric the rule reads."""
        if self.no_memorisation:
            return (MEMORISATION_METRIC,)
        if self.max_content_change is not None:
            return (CONTENT_CHANGE_METRIC,)
        if self.no_style_regresses is not None:  # the per-style metrics, whatever the styles (the rule reads them)
            return ()
        return tuple(name for name in (self.metric, self.base_metric) if name)


DEFAULT_GATE = (GateRule(metric="val_loss_lora", direction="lower", over_champion=0.0),)


class RegisterConfig(StageConfig):
    adapter_uri: str | None = Field(None, description="trained adapter folder (train's output)")
    run_id: str | None = Field(None, description="MLflow run of the training, holding the metrics")
    cache_uri: str | None = Field(
        None,
        description="latent cache index of the new version's held-out data: a champion evaluated on other data "
        "is measured again on it",
    )
    base_model: str = BaseModelRef
    model_name: str = Field(
        description="MLflow registered model name", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128
    )
    source_fingerprint: str | None = Field(
        None,
        description="fingerprint of the source listing the dataset came from (the pipeline fills it); recorded "
        "on the version so that a run on unchanged data can skip training",
    )
    config_digest: str | None = Field(
        None,
        description="digest of the pipeline config the version was trained with (the pipeline fills it); "
        "recorded on the version beside source_fingerprint",
    )
    gate: tuple[GateRule, ...] = Field(
        DEFAULT_GATE,
        min_length=1,
        description="rules a new version must all pass to become champion (else challenger); each rule: metric, "
        "direction (lower|higher), over_champion, base_metric + over_base (fractions), min, max; or one of "
        "no_memorisation: true, no_style_regresses: MARGIN (a fraction), max_content_change: BOUND",
    )

    @property
    def gate_metrics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for rule in self.gate for name in rule.metrics))

    @property
    def ranking_rule(self) -> GateRule:
        """The gate's first rule on a metric (the default rule when it has none): what a search ranks trials by."""
        return next((rule for rule in self.gate if rule.metric), DEFAULT_GATE[0])

    @property
    def compares_styles(self) -> bool:
        """Whether a rule reads the champion's per-style held-out losses."""
        return any(rule.no_style_regresses is not None for rule in self.gate)
