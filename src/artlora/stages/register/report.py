"""The gate's section of the report (`register/gate.html`), and the same outcome as model version tags."""

from __future__ import annotations

import html

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
    rows = "".join(
        f"<tr class={'pass' if o.passed else 'fail'}><td>{html.escape(o.rule)}</td>"
        f"<td>{'pass' if o.passed else 'fail'}</td><td>{html.escape(o.detail)}</td></tr>"
        for o in decision.outcomes
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>artlora gate: {html.escape(model)} version {html.escape(version)}</title>
<style>
body{{font-family:sans-serif;margin:2em}} td,th{{padding:.2em 1em;text-align:left}}
tr.pass td:nth-child(2){{color:#060}} tr.fail td:nth-child(2){{color:#a00}}
</style>
</head><body>
<h1>Gate: {html.escape(model)} version {html.escape(version)} is <em>{decision.alias}</em></h1>
<p>{html.escape(decision.reason)}.</p>
<p>Compared with: {html.escape(compared_with(decision))}.</p>
<table><tr><th>rule</th><th>outcome</th><th>values</th></tr>{rows}</table>
</body></html>
"""
