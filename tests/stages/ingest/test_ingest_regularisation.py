"""Regularisation images (ingest.regularisation_source): curated like the style images, all trained, under the
reserved style at their own loss weight with their own captions, reported apart, and left out of the styles."""

from __future__ import annotations

import shutil

import pytest
import yaml
from pydantic import ValidationError

from artlora import cli
from artlora.config import EvaluateConfig, IngestConfig
from artlora.contracts import REGULARISATION_STYLE
from artlora.data.dataset import Item, load_items
from artlora.demo import sample_data
from artlora.stages.evaluate import run as evaluate
from artlora.stages.ingest import run as ingest
from artlora.stages.ingest import split
from artlora.stages.ingest.sources import SourceError
from artlora.stages.register import card

pytestmark = pytest.mark.usefixtures("mlflow_db")

STYLES = ("watercolour", "op_art")


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "raw"
    sample_data.generate(root, count=6, size=64, styles=STYLES)
    return root


@pytest.fixture
def reg(tmp_path):
    """Three captioned ordinary images in a sub-folder (not a style), and one without a caption at the top."""
    root = tmp_path / "reg"
    paths = sample_data.generate(root / "photos", count=4, size=64, seed=3, styles=("geometric",))
    uncaptioned = root / "no_caption.png"
    shutil.move(paths[-1], uncaptioned)
    paths[-1].with_suffix(".txt").unlink()
    return root


def config_for(bucket: str, raw, **kwargs) -> IngestConfig:
    return IngestConfig(
        source=str(raw), storage_root=bucket, val_fraction=0.34, workers=1, trigger_word="sks style", **kwargs
    )


def test_regularisation_images_train_with_their_captions_weight_and_a_report_row(store, bucket, raw, reg):
    plain = ingest.run(config_for(bucket, raw))
    result = ingest.run(config_for(bucket, raw, regularisation_source=str(reg), regularisation_weight=0.25))
    assert result.fingerprint != plain.fingerprint
    items = load_items(result.dataset_uri)
    regs = [i for i in items if i.style == REGULARISATION_STYLE]
    others = [i for i in items if i.style != REGULARISATION_STYLE]
    assert sorted(i.source for i in regs) == sorted(
        f"{REGULARISATION_STYLE}/{p.relative_to(reg).as_posix()}"
        for p in reg.rglob("*.png")
        if p.with_suffix(".txt").exists()
    )
    assert len(regs) == 3, "the captioned ones are accepted; their sub-folder is not a style"
    assert {(i.split, i.loss_weight) for i in regs} == {("train", 0.25)}
    sidecars = {
        f"{REGULARISATION_STYLE}/{p.relative_to(reg).as_posix()}": p.with_suffix(".txt").read_text().strip()
        for p in reg.rglob("*.png")
        if p.with_suffix(".txt").exists()
    }
    assert {i.source: i.caption for i in regs} == sidecars, "their own captions, without the trigger word"
    assert all("sks style" in i.caption for i in others) and {i.loss_weight for i in others} == {1.0}
    assert {i.style for i in others} == set(STYLES) and "val" in {i.split for i in others}
    report = store.get_json(result.report_uri)
    assert report["regularisation"] == {
        "style": REGULARISATION_STYLE,
        "loss_weight": 0.25,
        "inputs": 4,
        "accepted": 3,
        "rejected": 1,
    }  # sidecars are not inputs
    (rejected,) = [r for r in report["rejections"] if r.get("regularisation")]
    assert rejected["file"] == f"{REGULARISATION_STYLE}/no_caption.png" and rejected["code"] == "caption_missing"
    assert report["by_style"][REGULARISATION_STYLE] == {"train": 3, "val": 0}
    assert report["balance"][REGULARISATION_STYLE]["loss_weight"] == 0.25
    assert "regularisation" not in store.get_json(plain.report_uri), "a report without them is unchanged"
    page = store.get_bytes(result.report_html_uri).decode()
    assert f"{REGULARISATION_STYLE} (regularisation images, not a style)" in page and "3 accepted, 1 rejected" in page
    styles = card.dataset_styles(result.dataset_uri)
    assert set(styles.words) == set(styles.train) == set(STYLES) and styles.regularisation == 3


def one_line_error(capsys, bucket, raw, tmp_path, *overrides: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {"storage_root": bucket, "base_model": "org/model", "model_name": "m", "ingest": {"source": str(raw)}}
        )
    )
    code = cli.main(["ingest", "--config", str(path), *[f for o in overrides for f in ("--set", o)]])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("artlora ")]
    assert code == 2 and len(lines) == 1, lines
    return lines[0]


def test_a_style_folder_named_like_the_reserved_style_is_refused(bucket, raw):
    (raw / "watercolour").rename(raw / REGULARISATION_STYLE)
    with pytest.raises(SourceError, match=f"^ingest.source has a style folder {REGULARISATION_STYLE!r}") as refused:
        ingest.run(config_for(bucket, raw))
    assert "\n" not in str(refused.value)


def test_a_weight_without_a_source_is_one_line(capsys, bucket, raw, tmp_path):
    line = one_line_error(capsys, bucket, raw, tmp_path, "ingest.regularisation_weight=2")
    assert "regularisation_weight needs regularisation_source" in line


def test_regularisation_settings_are_bounded_and_left_out_at_their_defaults():
    with pytest.raises(ValidationError, match="regularisation_weight\n  Input should be greater than 0"):
        IngestConfig(source="x", storage_root="s3://artlora", regularisation_source="y", regularisation_weight=0)
    with pytest.raises(ValidationError, match="set ingest.regularisation_weight instead"):
        IngestConfig(source="x", storage_root="s3://artlora", style_loss_weights={REGULARISATION_STYLE: 2.0})
    dumped = IngestConfig(source="x", storage_root="s3://artlora").model_dump()
    assert "regularisation_source" not in dumped and "regularisation_weight" not in dumped


def test_evaluation_never_takes_them_for_a_style_even_without_a_validation_split(store, bucket, raw, reg):
    result = ingest.run(config_for(bucket, raw, regularisation_source=str(reg)).model_copy(update={"val_fraction": 0}))
    assert {i.split for i in load_items(result.dataset_uri)} == {"train"}
    index = f"{bucket}/cache/index.json"
    store.put_json(index, {"dataset_uri": result.dataset_uri})
    config = EvaluateConfig(storage_root=bucket, base_model="tiny", cache_uri=index, resolution=32, images_per_style=2)
    heldout = evaluate.real_images(config)
    assert heldout.styles == sorted(STYLES), "the training images stand in for held-out ones, the styles' only"


def test_the_split_trains_every_regularisation_image_and_any_group_holding_one():
    def item(n: int, style: str) -> Item:
        return Item(
            sha256=f"{n:064x}",
            source=f"{style}/{n}.png",
            file=f"s3://b/{n}",
            caption="",
            style=style,
            width=64,
            height=64,
            bucket=(64, 64),
        )

    styles = [item(n, "a_style") for n in range(10)]
    regs = [item(n, REGULARISATION_STYLE) for n in range(10, 20)]
    # Each style image kept together with a regularisation image (near duplicates, keep_together).
    groups = {i.sha256: f"g{n}" for n, i in enumerate(styles[:4])} | {i.sha256: f"g{n}" for n, i in enumerate(regs[:4])}
    for seed in range(3):
        out = split.split(styles + regs, 0.5, seed, groups, {REGULARISATION_STYLE})
        by_source = {i.source: i.split for i in out}
        assert {by_source[i.source] for i in regs + styles[:4]} == {"train"}
        assert sum(by_source[i.source] == "val" for i in styles[4:]) == 3, "half of the 6 the groups leave"
