"""The lines `artlora pipeline run --local` and `artlora demo` end with: the evaluation's key figures, the caption
gap among them, and the summary on stdout after the JSON result, which stays parseable."""

import json

from artlora.cli.pipeline import evaluation_lines, print_run, summary

EVALUATION = {
    "val_loss_base": 0.21,
    "val_loss_lora": 0.18,
    "style_hits_base": 1.0,
    "style_hits_lora": 3.0,
    "caption_gap_base": 0.0012,
    "caption_gap_lora": 0.0311,
}
OUTPUTS = {
    "message": "changed: 3 new file(s)",
    "changed": True,
    "model_name": "style",
    "version": "2",
    "alias": "champion",
    "reason": "passed all 1 gate rule(s)",
    "dataset_fingerprint": "abc",
    "report": "/work/reports/style-v2.html",
    "adapter_uri": "s3://bucket/adapters/x",
    "run_id": "r1",
    "tracking_uri": "http://127.0.0.1:5000",
    "training": {"steps": 4, "adapter_step": 4, "stopped_early": False},
    "evaluation": EVALUATION,
    "seconds": 12.5,
}


def test_the_summary_has_the_caption_gap():
    lines = summary(OUTPUTS)
    hits = "styles painted closest to their own: base 1, LoRA 3"
    assert f"evaluation       : held-out loss 0.2100 (base) -> 0.1800 (LoRA); {hits}" in lines
    gap = next(line for line in lines if line.startswith("caption gap      : "))
    assert gap.startswith("caption gap      : 0.0012 (base) -> 0.0311 (LoRA)")


def test_one_style_is_measured_with_the_empty_caption_and_no_evaluation_has_no_lines():
    one_style = {**EVALUATION, "val_loss_lora/woodcut": 0.17}
    assert "held-out loss with the empty caption minus with its own" in evaluation_lines(one_style)[1]
    assert "another style's caption" in evaluation_lines({**one_style, "val_loss_lora/watercolour": 0.2})[1]
    no_styles = {key: value for key, value in EVALUATION.items() if not key.startswith("caption_gap")}
    assert evaluation_lines(no_styles)[1].startswith("caption gap      : n/a (the cache names no styles")
    assert evaluation_lines({}) == []


def test_the_summary_has_each_styles_movement_and_the_largest():
    lines = summary({**OUTPUTS, "evaluation": {**EVALUATION, "style_movement/woodcut": 0.62, "style_movement": 0.62}})
    movement = next(line for line in lines if line.startswith("style movement   : "))
    assert movement.startswith("style movement   : 0.620 at most") and movement.endswith("woodcut 0.620")
    assert not any(line.startswith("style movement") for line in summary(OUTPUTS))  # not measured: no line
    assert not any(line.startswith("other content") for line in lines)
    toward = {**EVALUATION, "style_movement/woodcut": 0.62, "other_content_movement/woodcut": 0.97}
    other = next(line for line in summary({**OUTPUTS, "evaluation": toward}) if line.startswith("other content"))
    assert other.endswith("woodcut 0.970")


def test_summary_follows_the_json_on_stdout(capsys):
    print_run(OUTPUTS)
    out = capsys.readouterr().out
    result, end = json.JSONDecoder().raw_decode(out, out.rfind("\n{\n") + 1)
    assert result == OUTPUTS and "registered model : style version 2 (alias: champion)" in out[end:]


def test_the_style_sheet_is_named_when_the_run_kept_one():
    assert not any(line.startswith("style sheet") for line in summary(OUTPUTS))
    lines = summary({**OUTPUTS, "style_sheet": "/work/reports/style-v2-styles.png"})
    assert "style sheet      : /work/reports/style-v2-styles.png (per style: real, base, LoRA)" in lines
