"""The gate: every rule of `register.gate` checked against the new version's metrics and the champion's; the new
version becomes `champion` when all of them pass, else `challenger`.

A relative improvement is measured against the reference's size: (champion - new) / |champion| when lower is
better. "Beat by at least 0" means strictly better, so the default rule (val_loss_lora, over_champion 0) is the
old gate: a lower held-out loss than the champion's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from artlora.config.register import MEMORISATION_METRIC, GateRule

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class Champion:
    """The champion as the gate compares with it: its metrics, and how they were obtained."""

    version: str
    metrics: Mapping[str, float]
    note: str  # e.g. "evaluated on the same held-out data" or "measured again on this version's held-out data"


@dataclass(frozen=True)
class Outcome:
    rule: str  # the rule in words
    passed: bool
    detail: str  # the values compared


@dataclass(frozen=True)
class Decision:
    alias: str
    outcomes: tuple[Outcome, ...]
    champion: Champion | None

    @property
    def reason(self) -> str:
        failed = [outcome for outcome in self.outcomes if not outcome.passed]
        if not failed:
            return f"passed all {len(self.outcomes)} gate rule(s)"
        return "; ".join(f"failed {outcome.rule}: {outcome.detail}" for outcome in failed)


def decide(rules: tuple[GateRule, ...], metrics: Mapping[str, float], champion: Champion | None) -> Decision:
    outcomes = tuple(check(rule, metrics, champion) for rule in rules)
    alias = CHAMPION if all(outcome.passed for outcome in outcomes) else CHALLENGER
    return Decision(alias, outcomes, champion)


def describe(rule: GateRule) -> str:
    if rule.no_memorisation:
        return "no memorisation"
    return f"{rule.metric} ({rule.direction} is better)"


def check(rule: GateRule, metrics: Mapping[str, float], champion: Champion | None) -> Outcome:
    if rule.no_memorisation:
        return _memorisation(metrics)
    value = metrics.get(rule.metric_name)
    if value is None:
        return Outcome(describe(rule), False, f"the run has no metric {rule.metric}")
    results = [_bounds(rule, value)] if rule.min is not None or rule.max is not None else []
    if rule.over_base is not None and rule.base_metric is not None:  # they go together (GateRule)
        base = metrics.get(rule.base_metric)
        results.append(_over(f"{rule.base_metric} (base model)", base, rule.direction, value, rule.over_base))
    if rule.over_champion is not None:
        results.append(_over_champion(rule, value, champion, rule.over_champion))
    return Outcome(describe(rule), all(ok for ok, _ in results), "; ".join(text for _, text in results))


def improvement(value: float, reference: float, direction: str) -> float:
    """How much better `value` is than `reference`, as a fraction of the reference (negative: worse)."""
    gain = reference - value if direction == "lower" else value - reference
    if reference == 0:
        return math.copysign(math.inf, gain) if gain else 0.0
    return gain / abs(reference)


def _over(name: str, reference: float | None, direction: str, value: float, margin: float) -> tuple[bool, str]:
    """Whether `value` beats the reference called `name` by at least `margin`, and the comparison in words."""
    if reference is None:
        return False, f"the run has no {name} to compare with"
    gain = improvement(value, reference, direction)
    ok = gain > 0 and gain >= margin
    needs = "any margin" if margin == 0 else f"at least {margin:.1%}"
    return ok, f"{value:.6g} vs {name} {reference:.6g}: {_percent(gain)} (needs {needs})"


def _over_champion(rule: GateRule, value: float, champion: Champion | None, margin: float) -> tuple[bool, str]:
    if champion is None:
        return True, "no champion yet"
    reference = champion.metrics.get(rule.metric_name)
    if reference is None:
        return False, (
            f"champion version {champion.version} has no {rule.metric} to compare with (compare them yourself and "
            "`artlora models promote` the better one)"
        )
    return _over(f"champion v{champion.version}", reference, rule.direction, value, margin)


def _bounds(rule: GateRule, value: float) -> tuple[bool, str]:
    low = -math.inf if rule.min is None else rule.min
    high = math.inf if rule.max is None else rule.max
    ok = low <= value <= high
    return ok, f"{value:.6g} {'within' if ok else 'outside'} [{_bound(rule.min)}, {_bound(rule.max)}]"


def _memorisation(metrics: Mapping[str, float]) -> Outcome:
    count = metrics.get(MEMORISATION_METRIC)
    if count is None:
        return Outcome(
            "no memorisation",
            False,
            f"the run has no {MEMORISATION_METRIC} metric, so memorisation was not checked (evaluate with a "
            "memorisation check, or leave this rule out)",
        )
    if count == 0:
        return Outcome("no memorisation", True, "no generated image was flagged as a near copy of a training image")
    return Outcome("no memorisation", False, f"{count:g} generated image(s) flagged as near copies of training images")


def _percent(gain: float) -> str:
    if math.isinf(gain):
        return "better" if gain > 0 else "worse"
    return f"{abs(gain):.1%} {'better' if gain > 0 else 'worse' if gain < 0 else 'equal'}"


def _bound(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
