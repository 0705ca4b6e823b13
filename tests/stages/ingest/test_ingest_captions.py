"""Captions: sidecar .txt / .caption files, metadata.jsonl, folder names, the trigger word, empty-caption
policies and the token limit; what cannot be used is reported, not dropped."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from artlora.config import IngestConfig, validate
from artlora.io import storage
from artlora.stages.ingest import captions
from artlora.stages.ingest import run as ingest
from artlora.stages.ingest.sources import list_source

pytestmark = pytest.mark.usefixtures("mlflow_db")


def picture(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (9, 9, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    out = io.BytesIO()
    Image.fromarray(blocks).save(out, format="PNG")
    return out.getvalue()


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def config_for(bucket: str, source: Path | str, **kwargs) -> IngestConfig:
    return IngestConfig(source=str(source), storage_root=bucket, **{"val_fraction": 0.0, "workers": 1, **kwargs})


@pytest.fixture
def layouts(tmp_path) -> Path:
    """Every way a caption can come, and every way one can go wrong."""
    metadata = [
        {"file_name": "from_metadata.png", "text": "words from metadata"},
        {"file_name": "both.png", "text": "metadata loses to a sidecar"},
        {"file_name": "missing.png", "text": "no such image"},
        {"text": "no file name"},
    ]
    lines = "\n".join(json.dumps(m) for m in metadata[:2]) + "\nnot json\n"
    lines += "\n".join(json.dumps(m) for m in metadata[2:])
    return write(
        tmp_path / "raw",
        {
            "ink_wash/txt.png": picture(1),
            "ink_wash/txt.txt": "\ufeff  a caption\nover two lines  \n",
            "ink_wash/cap.png": picture(2),
            "ink_wash/cap.caption": "from a .caption file",
            "ink_wash/txt_wins.png": picture(3),
            "ink_wash/txt_wins.txt": "the .txt",
            "ink_wash/txt_wins.caption": "not the .caption",
            "ink_wash/metadata.jsonl": lines,
            "ink_wash/from_metadata.png": picture(4),
            "ink_wash/both.png": picture(5),
            "ink_wash/both.txt": "the sidecar",
            "ink_wash/no_caption.png": picture(6),
            "ink_wash/orphan.txt": "nobody's caption",
        },
    )


def manifest_captions(store: storage.Storage, result: ingest.IngestResult) -> dict[str, str]:
    items = store.get_json(storage.join(result.dataset_uri, "manifest.json"))["items"]
    return {item["source"]: item["caption"] for item in items}


def test_captions_come_from_sidecars_metadata_and_the_folder_name(store, bucket, layouts):
    result = ingest.run(config_for(bucket, layouts))
    assert manifest_captions(store, result) == {
        "ink_wash/txt.png": "a caption over two lines",
        "ink_wash/cap.png": "from a .caption file",
        "ink_wash/txt_wins.png": "the .txt",
        "ink_wash/from_metadata.png": "words from metadata",
        "ink_wash/both.png": "the sidecar",
        "ink_wash/no_caption.png": "ink wash",  # the style label, from the folder name
    }
    report = store.get_json(result.report_uri)
    assert report["captions"]["by_source"] == {
        "metadata.jsonl": 1,
        "sidecar .caption": 1,
        "sidecar .txt": 3,
        "style label": 1,
    }
    notes = "\n".join(report["notes"])
    assert "ink_wash/orphan.txt: caption file with no input file" in notes
    assert "ink_wash/txt_wins.caption" in notes  # the .txt took precedence: this one is unused
    assert "metadata.jsonl line 3: not valid JSON" in notes
    assert "names ink_wash/missing.png, which is not in the source" in notes
    assert 'line 5: no "file_name" string' in notes
    assert report["inputs"] == 6, "sidecars and metadata files are not inputs"


def manifest_items(store: storage.Storage, result: ingest.IngestResult) -> dict[str, dict]:
    return {item["source"]: item for item in store.get_json(storage.join(result.dataset_uri, "manifest.json"))["items"]}


def test_with_all_captions_every_sidecar_line_and_metadata_entry_is_kept(store, bucket, layouts):
    (layouts / "ink_wash/metadata.jsonl").write_text(
        (layouts / "ink_wash/metadata.jsonl").read_text()
        + '\n{"file_name": "from_metadata.png", "text": "a later line"}'
    )
    (layouts / "metadata.jsonl").write_text('{"file_name": "ink_wash/both.png", "text": "a shallower metadata file"}')
    (layouts / "ink_wash/both.png.caption").write_text("named after the whole name")
    first = manifest_items(store, ingest.run(config_for(bucket, layouts)))
    assert all("more_captions" not in item for item in first.values()), "one caption each: the manifest as before"
    result = ingest.run(config_for(bucket, layouts, captions="all", trigger_word="zkx"))
    items = manifest_items(store, result)
    assert {name: [item["caption"], *item.get("more_captions", [])] for name, item in items.items()} == {
        "ink_wash/txt.png": ["zkx, a caption", "zkx, over two lines"],  # a caption per line
        "ink_wash/cap.png": ["zkx, from a .caption file"],
        "ink_wash/txt_wins.png": ["zkx, the .txt", "zkx, not the .caption"],
        "ink_wash/from_metadata.png": ["zkx, a later line", "zkx, words from metadata"],
        "ink_wash/both.png": [
            "zkx, named after the whole name",
            "zkx, the sidecar",
            "zkx, metadata loses to a sidecar",
            "zkx, a shallower metadata file",
        ],
        "ink_wash/no_caption.png": ["zkx, ink wash"],
    }
    assert first["ink_wash/both.png"]["caption"] == "named after the whole name", "the first is the one used alone"
    assert store.get_json(result.report_uri)["captions"]["per_image"] == {"1": 2, "2": 3, "4": 1}
    notes = "\n".join(store.get_json(result.report_uri)["notes"])
    assert "txt_wins.caption" not in notes, "every sidecar of an image is used"


def test_metadata_in_the_root_names_files_in_sub_folders(tmp_path):
    raw = write(tmp_path / "raw", {"a/x.png": picture(1), "metadata.jsonl": '{"file_name": "a/x.png", "text": "x"}'})
    listing = list_source(str(raw))
    assert [(f.name, f.caption, f.caption_source, f.style) for f in listing.files] == [
        ("a/x.png", "x", "metadata.jsonl", "a")
    ]


def test_the_trigger_word_is_put_into_every_caption_once(store, bucket, layouts):
    result = ingest.run(config_for(bucket, layouts, trigger_word="zkx style"))
    got = manifest_captions(store, result)
    assert got["ink_wash/txt.png"] == "zkx style, a caption over two lines"
    assert got["ink_wash/no_caption.png"] == "zkx style, ink wash"
    assert all(caption.lower().count("zkx style") == 1 for caption in got.values())
    (layouts / "ink_wash/cap.caption").write_text("already has ZKX Style in it")
    again = manifest_captions(store, ingest.run(config_for(bucket, layouts, trigger_word="zkx style")))
    assert again["ink_wash/cap.png"] == "already has ZKX Style in it"


def test_empty_caption_policies(store, bucket, layouts):
    by_trigger = ingest.run(config_for(bucket, layouts, empty_caption="trigger", trigger_word="zkx"))
    assert manifest_captions(store, by_trigger)["ink_wash/no_caption.png"] == "zkx"

    rejecting = ingest.run(config_for(bucket, layouts, empty_caption="reject"))
    assert "ink_wash/no_caption.png" not in manifest_captions(store, rejecting)
    report = store.get_json(rejecting.report_uri)
    assert [(r["file"], r["code"]) for r in report["rejections"]] == [("ink_wash/no_caption.png", "caption_missing")]
    assert by_trigger.fingerprint != rejecting.fingerprint


def test_trigger_policy_needs_a_trigger_word_or_a_model_name():
    with pytest.raises(ValidationError, match="trigger_word"):
        IngestConfig(source="x", storage_root="s3://artlora", empty_caption="trigger")
    pipeline = {"storage_root": "s3://artlora", "base_model": "org/model", "model_name": "my-style"}
    assert validate({**pipeline, "ingest": {"source": "x", "empty_caption": "trigger"}}).ingest.model_name == "my-style"


def test_sidecars_named_after_the_whole_image_name_are_read_first(tmp_path):
    raw = write(
        tmp_path / "raw",
        {
            "s/full.png": picture(1),
            "s/full.png.txt": "named after the whole name",
            "s/full.txt": "named after the stem: unused",
            "s/caption.jpg": picture(2),
            "s/caption.jpg.caption": "a .jpg.caption file",
            "s/stem.png": picture(3),
            "s/stem.txt": "named after the stem",
        },
    )
    listing = list_source(str(raw))
    assert {f.name: (f.caption, f.caption_source) for f in listing.files} == {
        "s/caption.jpg": ("a .jpg.caption file", "sidecar .caption"),
        "s/full.png": ("named after the whole name", "sidecar .txt"),
        "s/stem.png": ("named after the stem", "sidecar .txt"),
    }
    assert listing.notes == ["s/full.txt: caption file with no input file of the same name"]


def test_a_flat_folder_of_uncaptioned_images_trains_on_the_model_name(store, bucket, tmp_path):
    """The pipeline's model name reaches ingest as a shared key: with no trigger word set, it captions the images
    that have nothing else (and no more); the report says where each caption came from."""
    files = {f"art_{i}.png": picture(i) for i in range(6)}
    raw = write(tmp_path / "raw", {**files, "art_0.png.txt": "a caption of its own"})
    pipeline = {"storage_root": bucket, "base_model": "org/model", "model_name": "inkwell-v2"}
    config = validate({**pipeline, "ingest": {"source": str(raw), "val_fraction": 0.0, "workers": 1}}).ingest
    result = ingest.run(config)
    assert result.rejected == 0
    assert manifest_captions(store, result) == {
        "art_0.png": "a caption of its own",
        **{f"art_{i}.png": "inkwell-v2" for i in range(1, 6)},
    }
    by_source = store.get_json(result.report_uri)["captions"]["by_source"]
    assert by_source == {"model name (no trigger word set)": 5, "sidecar .txt": 1}
    with_trigger = ingest.run(config.model_copy(update={"trigger_word": "zq style"}))
    assert set(manifest_captions(store, with_trigger).values()) == {"zq style, a caption of its own", "zq style"}


def test_long_captions_are_reported_and_truncated_by_policy(store, bucket, tmp_path):
    long = " ".join(f"word{i}" for i in range(100))
    raw = write(tmp_path / "raw", {"s/long.png": picture(1), "s/long.txt": long, "s/short.png": picture(2)})
    result = ingest.run(config_for(bucket, raw))
    caption = manifest_captions(store, result)["s/long.png"]
    assert long.startswith(caption) and captions.estimate_tokens(caption) <= 77 < captions.estimate_tokens(long)
    over = store.get_json(result.report_uri)["captions"]["over_limit"]
    assert [(o["file"], o["tokens"]) for o in over] == [("s/long.png", captions.estimate_tokens(long))]
    assert over[0]["action"].startswith("truncated to")
    assert "estimate" in store.get_json(result.report_uri)["captions"]["token_count"]

    kept = ingest.run(config_for(bucket, raw, long_caption="keep"))
    assert manifest_captions(store, kept)["s/long.png"] == long
    assert store.get_json(kept.report_uri)["captions"]["over_limit"][0]["action"] == "kept whole"


# -- the token estimate --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 2),
        ("a cat", 4),
        ("a watercolour, soft tones", 8),  # watercolour: 11 letters -> 2 tokens; the comma is one
        ("1889", 6),  # CLIP splits numbers into digits
        ("it's", 4),
        ("neo-impressionist", 6),
    ],
)
def test_token_estimate(text, tokens):
    assert captions.estimate_tokens(text) == tokens


def test_truncate_cuts_at_a_word_boundary_within_the_limit():
    text = "one, two, three four five six seven"
    cut = captions.truncate(text, 7)
    assert cut == "one, two, three" and captions.estimate_tokens(cut) == 7
    assert captions.truncate("short", 77) == "short"
