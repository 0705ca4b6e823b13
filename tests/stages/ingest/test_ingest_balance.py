"""Balance between styles: per-style repeats and loss weights go with each image into the dataset version, and
the curation report shows the training images per style and epoch."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from artlora import cli
from artlora.config import IngestConfig
from artlora.data.dataset import load_items
from artlora.demo import sample_data
from artlora.stages.ingest import run as ingest

pytestmark = pytest.mark.usefixtures("mlflow_db")

STYLES = ("watercolour", "op_art")


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "raw"
    sample_data.generate(root, count=6, size=64, styles=STYLES)
    return root


def config_for(bucket: str, raw, **kwargs) -> IngestConfig:
    return IngestConfig(source=str(raw), storage_root=bucket, val_fraction=0.34, workers=1, **kwargs)


def test_repeats_and_loss_weights_reach_every_image_and_the_report(store, bucket, raw):
    plain = ingest.run(config_for(bucket, raw))
    config = config_for(bucket, raw, style_repeats={"op_art": 4}, style_loss_weights={"watercolour": 0.5})
    result = ingest.run(config)
    assert result.fingerprint != plain.fingerprint, "a new balance is a new dataset version"
    items = load_items(result.dataset_uri)
    assert {(i.style, i.repeats, i.loss_weight) for i in items} == {("op_art", 4, 1.0), ("watercolour", 1, 0.5)}
    assert {(i.repeats, i.loss_weight) for i in load_items(plain.dataset_uri)} == {(1, 1.0)}
    report = store.get_json(result.report_uri)
    train = {style: sum(i.split == "train" and i.style == style for i in items) for style in STYLES}
    assert report["balance"] == {
        "op_art": {
            "train_images": train["op_art"],
            "repeats": 4,
            "effective_per_epoch": 4 * train["op_art"],
            "loss_weight": 1.0,
        },
        "watercolour": {
            "train_images": train["watercolour"],
            "repeats": 1,
            "effective_per_epoch": train["watercolour"],
            "loss_weight": 0.5,
        },
    }
    page = store.get_bytes(result.report_html_uri).decode()
    row = [
        style := "op_art",
        train[style],
        sum(i.style == style for i in items) - train[style],
        0,
        4,
        4 * train[style],
        1.0,
    ]
    assert "train images per epoch" in page
    assert "<tr>" + "".join(f'<td class="l">{cell}</td>' for cell in row) + "</tr>" in page


def test_a_style_that_is_not_in_the_dataset_is_one_line_naming_it_and_the_styles(capsys, bucket, raw, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {"storage_root": bucket, "base_model": "org/model", "model_name": "m", "ingest": {"source": str(raw)}}
        )
    )
    code = cli.main(["ingest", "--config", str(path), "--set", "ingest.style_repeats={oil_paint: 2}"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("artlora ")]
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("artlora ingest: error: ingest.style_repeats names style 'oil_paint'")
    assert "op_art, watercolour" in lines[0]


def test_balance_settings_are_bounded():
    with pytest.raises(ValidationError, match=r"repeat count must be in \[1, 1000\]"):
        IngestConfig(source="x", storage_root="s3://artlora", style_repeats={"a": 0})
    with pytest.raises(ValidationError, match=r"loss weight must be in \(0, 100\]"):
        IngestConfig(source="x", storage_root="s3://artlora", style_loss_weights={"a": -1.0})
