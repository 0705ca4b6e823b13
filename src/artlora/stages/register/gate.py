"""The gate: every rule of `register.gate` checked against the new version's metrics and the champion's; the new
version becomes `champion` when all of them pass, else `challenger`.

A relative improvement is measured against the reference's size: (champion - new) / |champion| when lower is
better. "Beat by at least 0" means strictly better, so the default rule (val_loss_lora, over_champion 0) is the
old gate: a lower held-out loss than the champion's.

Per style, like for like: `no_style_regresses` compares each style's held-out loss (`val_loss_lora/<style>`) with
the champion's value of the same style, for the styles both have, and fails when any is worse by more than its
margin. The decision keeps one row per style (the new version's value, the champion's, and, under that rule,
pass or fail), which the gate's page shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from artlora.config.register import CONTENT_CHANGE_METRIC, MEMORISATION_METRIC, STYLE_LOSS_PREFIX, GateRule

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
class StyleRow:
    """One style's held-out loss, the new version's beside the champion's."""

    style: str
    value: float | None  # None: the new version was not evaluated on this style
    champion: float | None  # None: no champion, or it has no value for this style
    passed: bool | None = None  # under a no_style_regresses rule: within its margin; None: not compared

    @property
    def change(self) -> float | None:
        """(new - champion) / champion: positive is worse (a higher loss)."""
        if self.value is None or not self.champion:
            return None
        return (self.value - self.champion) / abs(self.champion)


@dataclass(frozen=True)
class Decision:
    alias: str
    outcomes: tuple[Outcome, ...]
    champion: Champion | None
    styles: tuple[StyleRow, ...] = ()

    @property
    def reason(self) -> str:
        failed = [outcome for outcome in self.outcomes if not outcome.passed]
        if not failed:
            return f"passed all {len(self.outcomes)} gate rule(s)"
        return "; ".join(f"failed {outcome.rule}: {outcome.detail}" for outcome in failed)


def decide(rules: tuple[GateRule, ...], metrics: Mapping[str, float], champion: Champion | None) -> Decision:
    outcomes = tuple(check(rule, metrics, champion) for rule in rules)
    alias = CHAMPION if all(outcome.passed for outcome in outcomes) else CHALLENGER
    margin = next((rule.no_style_regresses for rule in rules if rule.no_style_regresses is not None), None)
    return Decision(alias, outcomes, champion, style_rows(metrics, champion, margin))


def style_losses(metrics: Mapping[str, float]) -> dict[str, float]:
    """{style: held-out loss} from metrics named val_loss_lora/<style>."""
    return {k.removeprefix(STYLE_LOSS_PREFIX): v for k, v in metrics.items() if k.startswith(STYLE_LOSS_PREFIX)}


def style_rows(metrics: Mapping[str, float], champion: Champion | None, margin: float | None) -> tuple[StyleRow, ...]:
    """Every style either version has, by name; pass/fail where both have it and a margin is given."""
    ours, theirs = style_losses(metrics), style_losses(champion.metrics) if champion else {}
    rows = []
    for style in sorted(set(ours) | set(theirs)):
        value, reference = ours.get(style), theirs.get(style)
        passed = None
        if margin is not None and value is not None and reference is not None:
            passed = value <= reference + margin * abs(reference)
        rows.append(StyleRow(style, value, reference, passed))
    return tuple(rows)


def describe(rule: GateRule) -> str:
    if rule.no_memorisation:
        return "no memorisation"
    if rule.no_style_regresses is not None:
        return f"no style regresses (by more than {rule.no_style_regresses:.1%})"
    if rule.max_content_change is not None:
        return f"{CONTENT_CHANGE_METRIC} at most {rule.max_content_change:g}"
    return f"{rule.metric} ({rule.direction} is better)"


def check(rule: GateRule, metrics: Mapping[str, float], champion: Champion | None) -> Outcome:
    if rule.no_memorisation:
        return _memorisation(metrics)
    if rule.no_style_regresses is not None:
        return _styles(rule, rule.no_style_regresses, metrics, champion)
    if rule.max_content_change is not None:
        return _content_change(rule, rule.max_content_change, metrics)
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


def _styles(rule: GateRule, margin: float, metrics: Mapping[str, float], champion: Champion | None) -> Outcome:
    if champion is None:
        return Outcome(describe(rule), True, "no champion yet")
    rows = style_rows(metrics, champion, margin)
    compared = [row for row in rows if row.passed is not None]
    if not style_losses(metrics):
        return Outcome(describe(rule), False, f"the run has no {STYLE_LOSS_PREFIX}<style> metrics (run evaluate)")
    if not compared:
        return Outcome(
            describe(rule),
            False,
            f"champion version {champion.version} has no held-out loss of any of this run's styles to compare with "
            "(compare them yourself and `artlora models promote` the better one)",
        )
    worse = [row for row in compared if not row.passed]
    listed = worse or compared
    values = ", ".join(f"{r.style} {r.value:.6g} vs {r.champion:.6g} ({_change(r.change)})" for r in listed)
    if worse:
        return Outcome(
            describe(rule),
            False,
            f"{len(worse)} of {len(compared)} styles worse than champion v{champion.version}: {values}",
        )
    return Outcome(describe(rule), True, f"{len(compared)} styles compared with champion v{champion.version}: {values}")


def _content_change(rule: GateRule, bound: float, metrics: Mapping[str, float]) -> Outcome:
    value = metrics.get(CONTENT_CHANGE_METRIC)
    if value is None:
        return Outcome(describe(rule), False, f"the run has no {CONTENT_CHANGE_METRIC} metric (run evaluate)")
    ok = value <= bound
    return Outcome(describe(rule), ok, f"{value:.6g} {'within' if ok else 'above'} the bound {bound:g}")


def _change(change: float | None) -> str:
    if change is None:
        return "-"
    return f"{abs(change):.1%} {'worse' if change > 0 else 'better' if change < 0 else 'equal'}"


def _percent(gain: float) -> str:
    if math.isinf(gain):
        return "better" if gain > 0 else "worse"
    return f"{abs(gain):.1%} {'better' if gain > 0 else 'worse' if gain < 0 else 'equal'}"


def _bound(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
