"""The gate's section of the report (`register/gate.html`), and the same outcome as model version tags."""

from __future__ import annotations

from artlora import pages
from artlora.data import lineage
from artlora.stages.register.gate import Decision


def gate_tags(decision: Decision) -> dict[str, str]:
    """The decision, why, what the champion's values were, and each rule's outcome, as version tags."""
    tags = {
        lineage.GATE_DECISION: decision.alias,
        lineage.GATE_REASON: decision.reason,
        lineage.GATE_COMPARED: compared_with(decision),
    }
    for number, outcome in enumerate(decision.outcomes, start=1):
        verdict = "pass" if outcome.passed else "fail"
        tags[lineage.GATE_RULE.format(number)] = f"{verdict}: {outcome.rule}: {outcome.detail}"
    return tags


def compared_with(decision: Decision) -> str:
    champion = decision.champion
    if champion is None:
        return "no champion yet"
    return f"champion version {champion.version}: {champion.note}"


def gate_html(decision: Decision, model: str, version: str) -> str:
    """The gate's page: the decision, why, and each rule with its values (`pages/templates/gate.html`)."""
    return pages.render(
        "gate.html",
        title=f"artlora gate: {model} version {version}",
        model=model,
        version=version,
        decision=decision,
        compared=compared_with(decision),
    )
