"""Each gate rule on its own: over the champion, over the base model, absolute bounds, no memorisation."""

from __future__ import annotations

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
