"""Each gate rule on its own: over the champion, over the base model, absolute bounds, no memorisation."""

from __future__ import annotations

import re

import pytest

from artlora.config import ConfigError, load_config
from artlora.config.register import DEFAULT_GATE, GateRule
from artlora.stages.register.gate import Champion, decide

CHAMPION_V1 = Champion("1", {"val_loss_lora": 0.50, "style_score": 0.80}, "evaluated on the same held-out data")


def rule(**values) -> GateRule:
    return GateRule(**values)


def test_the_default_gate_is_a_lower_loss_than_the_champion():
    assert decide(DEFAULT_GATE, {"val_loss_lora": 0.9}, None).alias == "champion"  # no champion yet
    assert decide(DEFAULT_GATE, {"val_loss_lora": 0.49}, CHAMPION_V1).alias == "champion"
    tie = decide(DEFAULT_GATE, {"val_loss_lora": 0.50}, CHAMPION_V1)
    assert tie.alias == "challenger" and "0.0% equal" in tie.reason
    worse = decide(DEFAULT_GATE, {"val_loss_lora": 0.60}, CHAMPION_V1)
    assert worse.alias == "challenger" and "vs champion v1 0.5: 20.0% worse" in worse.reason


def test_a_margin_over_the_champion_is_relative_to_its_value():
    gate = (rule(metric="val_loss_lora", over_champion=0.05),)
    assert decide(gate, {"val_loss_lora": 0.48}, CHAMPION_V1).alias == "challenger"  # 4% better, needs 5%
    assert decide(gate, {"val_loss_lora": 0.47}, CHAMPION_V1).alias == "champion"  # 6% better


def test_higher_is_better_metrics():
    gate = (rule(metric="style_score", direction="higher", over_champion=0.0),)
    assert decide(gate, {"style_score": 0.81}, CHAMPION_V1).alias == "champion"
    assert decide(gate, {"style_score": 0.79}, CHAMPION_V1).alias == "challenger"


def test_a_margin_over_the_base_model():
    gate = (rule(metric="val_loss_lora", base_metric="val_loss_base", over_base=0.10),)
    outcome = decide(gate, {"val_loss_lora": 0.95, "val_loss_base": 1.0}, None).outcomes[0]
    assert (
        not outcome.passed
        and outcome.detail == "0.95 vs val_loss_base (base model) 1: 5.0% better (needs at least 10.0%)"
    )
    assert decide(gate, {"val_loss_lora": 0.85, "val_loss_base": 1.0}, None).alias == "champion"
    missing = decide(gate, {"val_loss_lora": 0.85}, None).outcomes[0]
    assert not missing.passed and "no val_loss_base (base model)" in missing.detail


def test_absolute_bounds_are_inclusive():
    gate = (rule(metric="val_loss_lora", min=0.1, max=0.5),)
    assert decide(gate, {"val_loss_lora": 0.5}, None).alias == "champion"
    assert decide(gate, {"val_loss_lora": 0.1}, None).alias == "champion"
    high = decide(gate, {"val_loss_lora": 0.51}, None)
    assert high.alias == "challenger" and "0.51 outside [0.1, 0.5]" in high.reason
    # Bounds hold even with no champion: a bad first version does not become champion.
    assert decide((rule(metric="val_loss_lora", max=0.5),), {"val_loss_lora": 2.0}, None).alias == "challenger"


def test_no_memorisation_reads_memorised_images_and_says_when_it_is_missing():
    gate = (rule(no_memorisation=True),)
    assert decide(gate, {"memorised_images": 0}, None).alias == "champion"
    flagged = decide(gate, {"memorised_images": 2}, None)
    assert flagged.alias == "challenger" and "2 generated image(s) flagged" in flagged.reason
    unchecked = decide(gate, {"val_loss_lora": 0.4}, None)
    assert unchecked.alias == "challenger" and "no memorised_images metric" in unchecked.reason


def test_a_champion_without_the_metric_is_not_silently_beaten():
    """The old bug: the champion's value of a non-val metric was never recorded, so every version won."""
    gate = (rule(metric="clip_score", direction="higher", over_champion=0.0),)
    decision = decide(gate, {"clip_score": 0.3}, CHAMPION_V1)
    assert decision.alias == "challenger" and "champion version 1 has no clip_score" in decision.reason


def test_every_rule_must_pass_and_each_outcome_is_kept():
    gate = (rule(metric="val_loss_lora", over_champion=0.0), rule(metric="val_loss_lora", max=0.3))
    decision = decide(gate, {"val_loss_lora": 0.4}, CHAMPION_V1)
    assert decision.alias == "challenger"
    assert [outcome.passed for outcome in decision.outcomes] == [True, False]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("[{metric: val_loss_lora}]", "checks nothing"),
        ("[{metric: val_loss_lora, over_base: 0.1}]", "over_base and base_metric go together"),
        ("[{metric: val_loss_lora, min: 2, max: 1}]", "min 2.0 is above max 1.0"),
        ("[{no_memorisation: true, metric: val_loss_lora}]", "takes no metric"),
        ("[{over_champion: 0}]", "needs a metric"),
        ("[{metric: val_loss_lora, over_champion: -0.1}]", "greater than or equal to 0"),
        ("[]", "at least 1 item"),
    ],
)
def test_bad_rules_fail_with_the_field_named(rules, message):
    with pytest.raises(ConfigError, match="register.gate") as error:
        load_config("configs/demo.yaml", [f"register.gate={rules}"])
    assert message in str(error.value)


def test_a_gate_block_from_yaml():
    gate = "[{metric: val_loss_lora, over_champion: 0.02, base_metric: val_loss_base, over_base: 0}, "
    gate += "{no_memorisation: true}]"
    config = load_config("configs/demo.yaml", [f"register.gate={gate}"]).register
    assert config.gate[0].over_champion == 0.02 and config.gate[1].no_memorisation
    assert config.gate_metrics == ("val_loss_lora", "val_loss_base", "memorised_images")


# -- per-style rules -----------------------------------------------------------------------------------------

STYLED_CHAMPION = Champion(
    "3",
    {"val_loss_lora": 0.30, "val_loss_lora/woodcut": 0.20, "val_loss_lora/op_art": 0.40, "val_loss_lora/gone": 0.1},
    "evaluated on the same held-out data",
)


def test_no_style_regresses_refuses_a_challenger_worse_on_one_style_even_when_better_overall():
    gate = (rule(metric="val_loss_lora", over_champion=0.0), rule(no_style_regresses=0.05))
    # Better on average (0.25 < 0.30), but woodcut is 10% worse: over the 5% margin.
    metrics = {"val_loss_lora": 0.25, "val_loss_lora/woodcut": 0.22, "val_loss_lora/op_art": 0.30}
    decision = decide(gate, metrics, STYLED_CHAMPION)
    assert decision.alias == "challenger"
    assert [o.passed for o in decision.outcomes] == [True, False]
    assert "1 of 2 styles worse than champion v3: woodcut 0.22 vs 0.2 (10.0% worse)" in decision.reason


def test_no_style_regresses_passes_within_its_margin_like_for_like_and_without_a_champion():
    gate = (rule(no_style_regresses=0.05),)
    # woodcut 4% worse (within 5%); op_art better; "gone" is the champion's only, "new" the challenger's only:
    # neither is compared.
    metrics = {"val_loss_lora/woodcut": 0.208, "val_loss_lora/op_art": 0.39, "val_loss_lora/new": 9.0}
    decision = decide(gate, metrics, STYLED_CHAMPION)
    assert decision.alias == "champion", decision.reason
    assert "2 styles compared" in decision.outcomes[0].detail
    rows = {row.style: row for row in decision.styles}
    assert set(rows) == {"gone", "new", "op_art", "woodcut"}
    assert rows["woodcut"].passed and rows["op_art"].passed
    assert rows["new"].passed is None and rows["gone"].passed is None and rows["new"].champion is None
    assert decide(gate, metrics, None).alias == "champion"  # no champion yet
    strict = decide((rule(no_style_regresses=0.0),), metrics, STYLED_CHAMPION)
    assert strict.alias == "challenger" and "woodcut 0.208 vs 0.2 (4.0% worse)" in strict.reason


def test_no_style_regresses_fails_when_nothing_can_be_compared():
    gate = (rule(no_style_regresses=0.0),)
    untested = decide(gate, {"val_loss_lora": 0.1}, STYLED_CHAMPION)
    assert untested.alias == "challenger" and "no val_loss_lora/<style> metrics" in untested.reason
    disjoint = decide(gate, {"val_loss_lora/other": 0.1}, STYLED_CHAMPION)
    assert disjoint.alias == "challenger" and "no held-out loss of any of this run's styles" in disjoint.reason


def test_max_content_change_bounds_the_evaluations_content_change():
    gate = (rule(max_content_change=0.3),)
    assert decide(gate, {"content_change": 0.3}, None).alias == "champion"  # inclusive, and no champion needed
    changed = decide(gate, {"content_change": 0.44}, STYLED_CHAMPION)
    assert changed.alias == "challenger" and "0.44 above the bound 0.3" in changed.reason
    missing = decide(gate, {"val_loss_lora": 0.1}, None)
    assert missing.alias == "challenger" and "no content_change metric" in missing.reason


def test_the_gate_page_lists_each_styles_row():
    from artlora.stages.register.report import gate_html

    metrics = {"val_loss_lora/woodcut": 0.22, "val_loss_lora/op_art": 0.30}
    page = gate_html(decide((rule(no_style_regresses=0.05),), metrics, STYLED_CHAMPION), "m", "4")
    rows = re.findall(
        r"<tr><td class=\"l\">(\w+)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>"
        r"<td class=\"l ?(?:pass|fail)?\">([^<]*)</td></tr>",
        page,
    )
    assert rows == [
        ("gone", "-", "0.1", "-", "not compared"),
        ("op_art", "0.3", "0.4", "-25.0%", "pass"),
        ("woodcut", "0.22", "0.2", "+10.0%", "fail"),
    ]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("[{no_style_regresses: 0.05, metric: val_loss_lora}]", "takes no metric"),
        ("[{no_style_regresses: 0.05, max_content_change: 0.3}]", "rules of their own"),
        ("[{max_content_change: -1}]", "greater than or equal to 0"),
        ("[{no_style_regresses: 2}]", "less than or equal to 1"),
    ],
)
def test_bad_per_style_rules_fail_with_the_field_named(rules, message):
    with pytest.raises(ConfigError, match="register.gate") as error:
        load_config("configs/demo.yaml", [f"register.gate={rules}"])
    assert message in str(error.value)
