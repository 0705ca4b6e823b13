"""The model card's Markdown, from a gate decision and a version's tags and metrics (no services needed)."""

from __future__ import annotations

from collections import Counter

from artlora.contracts import REGULARISATION_STYLE
from artlora.stages.register import card
from artlora.stages.register.gate import Champion, Decision, Outcome

TAGS = {
    "base_model": "runwayml/sd-1.5",
    "dataset_fingerprint": "abc123",
    "adapter_uri": "s3://b/runs/r1/adapter",
    "adapter_step": "40",
    "code_version": "artlora 0.1.0",
}
METRICS = {
    "val_loss_base": 0.2,
    "val_loss_lora": 0.15,
    "val_loss_base/woodcut": 0.2,
    "val_loss_lora/woodcut": 0.1,
    "style_distance_base/woodcut": 1.5,
    "style_distance_lora/woodcut": 0.9,
}


def test_trigger_words_are_the_words_every_caption_of_a_style_carries():
    captions = ["sks woodcut, a tree", "a house, sks Woodcut style", "SKS woodcut of a boat"]
    assert card.common_words(captions) == "sks woodcut"
    assert card.common_words([]) == ""


def test_card_compares_with_base_and_champion_and_links_the_served_report():
    decision = Decision(
        "challenger",
        (Outcome("val_loss_lora (lower is better)", False, "0.15 vs champion 0.12"),),
        Champion("3", {"val_loss_lora": 0.12}, "evaluated on the same held-out data"),
    )
    styles = card.Styles(
        fingerprint="abc123",
        uri="s3://b/datasets/abc123",
        train=Counter(woodcut=8),
        heldout=Counter(woodcut=2),
        words={"woodcut": "sks woodcut"},
    )
    text = card.model_card(
        model="m",
        version="4",
        tags=TAGS,
        metrics=METRICS,
        decision=decision,
        styles=styles,
        run_id="r1",
        tracking_uri="http://127.0.0.1:5000",
    )
    assert text.startswith("# m version 4: woodcut\n")
    assert "| `woodcut` | 8 | 2 | `sks woodcut` |" in text
    assert "10 images (8 training, 2 held out)" in text and "`runwayml/sd-1.5`" in text
    assert "| val_loss_lora (lower is better) | **fail** | 0.15 vs champion 0.12 |" in text
    assert "| 0.2 | 0.15 | 0.12 |" in text  # base, this version, champion
    assert "| `woodcut` | 0.2 | 0.1 | -50.0% | 1.5 | 0.9 |" in text
    assert "(http://127.0.0.1:5000/get-artifact?run_uuid=r1&path=eval/report.html)" in text
    local = card.model_card(
        model="m",
        version="4",
        tags=TAGS,
        metrics=METRICS,
        decision=decision,
        styles=None,
        run_id="r1",
        tracking_uri="file:///tmp/mlruns",
    )
    assert "get-artifact" not in local and "could not be read back" in local and "# m version 4: woodcut" in local


def test_the_regularisation_images_are_counted_apart_and_never_a_style_of_the_card():
    decision = Decision("challenger", (), None)
    styles = card.Styles(
        fingerprint="abc123",
        uri="s3://b/datasets/abc123",
        train=Counter(woodcut=8),
        heldout=Counter(woodcut=2),
        words={"woodcut": "sks woodcut"},
        regularisation=5,
    )
    # Without a validation split the held-out loss is measured on training images, the regularisation ones too.
    metrics = {**METRICS, f"val_loss_lora/{REGULARISATION_STYLE}": 0.3, f"val_loss_base/{REGULARISATION_STYLE}": 0.3}
    for read_back in (styles, None):
        text = card.model_card(
            model="m",
            version="4",
            tags=TAGS,
            metrics=metrics,
            decision=decision,
            styles=read_back,
            run_id="r1",
            tracking_uri="file:///mlruns",
        )
        assert text.startswith("# m version 4: woodcut\n") and f"`{REGULARISATION_STYLE}`" not in text
    assert "(8 training, 2 held out) and 5 regularisation images" in card.model_card(
        model="m",
        version="4",
        tags=TAGS,
        metrics=metrics,
        decision=decision,
        styles=styles,
        run_id="r1",
        tracking_uri="file:///mlruns",
    )
