"""Symbolic links in a local ingest source: one leaving the folder is rejected as `outside_source` (unless the
config allows it), a loop and a link to nothing are rejected with their reason; each is accounted for in the
curation report, none is read. Before this work a link to an image outside the folder was ingested and a loop
vanished from the report (issue 21)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from artlora.config import IngestConfig
from artlora.demo import sample_data
from artlora.stages.ingest import run as ingest

SIZE = 64

pytestmark = pytest.mark.usefixtures("mlflow_db")


def source_with_links(tmp_path: Path) -> tuple[Path, Path]:
    """A source of generated artworks, a private image outside it, and links: out, round, to nothing, inside."""
    source = tmp_path / "raw"
    sample_data.generate(source, count=6, size=SIZE, styles=("woodcut", "geometric"))
    outside = tmp_path / "private" / "secret.png"
    outside.parent.mkdir()
    inside = sorted((source / "woodcut").glob("*.png"))[0]
    outside.write_bytes(inside.read_bytes()[::-1])  # some other file of the user's
    (source / "woodcut" / "escape.png").symlink_to(outside)
    (source / "woodcut" / "escape.txt").write_text("a woodcut")
    os.symlink("round-b.png", source / "woodcut" / "round-a.png")
    os.symlink("round-a.png", source / "woodcut" / "round-b.png")
    (source / "woodcut" / "gone.png").symlink_to(tmp_path / "nothing-here.png")
    (source / "woodcut" / "alias.png").symlink_to(inside)  # inside the folder: read as usual
    (source / "woodcut" / "alias.txt").write_text("a woodcut")
    return source, outside


def ingested(store, bucket: str, source: Path, **settings) -> dict:
    config = IngestConfig(source=str(source), storage_root=bucket, val_fraction=0.2, workers=1, **settings)
    result = ingest.run(config)
    return store.get_json(result.report_uri)


def test_links_leaving_the_source_looping_or_broken_are_rejected_with_their_reason(store, bucket, tmp_path):
    source, outside = source_with_links(tmp_path)

    report = ingested(store, bucket, source)

    codes = {r["file"]: r["code"] for r in report["rejections"]}
    assert codes["woodcut/escape.png"] == "outside_source"
    assert codes["woodcut/round-a.png"] == codes["woodcut/round-b.png"] == "link_loop"
    assert codes["woodcut/gone.png"] == "broken_link"
    reason = next(r["reason"] for r in report["rejections"] if r["file"] == "woodcut/escape.png")
    assert str(outside) in reason and "ingest.allow_outside_links" in reason
    # Every input is accounted for once; the link inside the folder is read like any file.
    listed = report["accepted_files"] + [r["file"] for r in report["rejections"]]
    assert len(listed) == len(set(listed)) == report["inputs"]
    assert "woodcut/alias.png" in listed and codes.get("woodcut/alias.png") != "outside_source"


def test_the_config_may_allow_links_leaving_the_source(store, bucket, tmp_path):
    source, _ = source_with_links(tmp_path)

    report = ingested(store, bucket, source, allow_outside_links=True)

    codes = {r["file"]: r["code"] for r in report["rejections"]}
    assert codes.get("woodcut/escape.png") != "outside_source"  # read (here: bytes that are not an image)
    assert codes["woodcut/round-a.png"] == "link_loop"
