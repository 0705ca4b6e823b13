"""Ingest on a corpus with one file of every bad kind and every colour mode, decoded by a pool of worker
processes: each outcome and reason, the report (JSON and self-contained HTML) and what MLflow received."""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from image_files import png_rgb16
from mlflow.tracking import MlflowClient
from PIL import Image, ImageFilter

from artlora.config import IngestConfig
from artlora.io import storage, tracking
from artlora.stages.ingest import run as ingest

# Accepted: file -> upright (width, height).
GOOD = {
    "art/rgb.jpg": (96, 80),
    "art/rgba.png": (80, 80),
    "art/la.png": (72, 72),
    "art/l.png": (64, 64),
    "art/p_transparent.png": (64, 64),
    "art/animated.gif": (64, 64),
    "art/cmyk.jpg": (64, 64),
    "art/cmyk.tif": (64, 64),
    "art/grey16.png": (64, 64),
    "art/grey16.tif": (64, 64),
    "art/rgb48.png": (64, 64),
    "art/rgb.webp": (64, 64),
    "art/rgb.bmp": (64, 64),
    "art/rgb.tiff": (64, 64),
    "art/rotated.jpg": (64, 96),
    "art/big.png": (128, 128),
}
# Rejected: file -> (code, words the reason must contain).
BAD = {
    "bad/empty.png": ("empty", "0 bytes"),
    "bad/truncated.jpg": ("unreadable", "truncated"),
    "bad/truncated.png": ("unreadable", "truncated"),
    "bad/fake.jpg": ("not_image", "not an image"),
    "bad/notes.pdf": ("not_image", ".pdf"),
    "bad/bomb.png": ("too_many_pixels", "ingest.max_pixels"),
    "bad/small.png": ("too_small", "32x32"),
    "bad/wide.png": ("aspect_ratio", "4.00:1"),
    "art/blurry.png": ("blurry", "ingest.blur_threshold"),
    "art/uncaptioned.png": ("caption_missing", "ingest.empty_caption=reject"),
    "art/zz_copy.png": ("exact_duplicate", "art/rgba.png"),
    "art/big_resized.jpg": ("near_duplicate", "art/big.png"),
}
UNDECODABLE = {
    "bad/empty.png",
    "bad/truncated.jpg",
    "bad/truncated.png",
    "bad/fake.jpg",
    "bad/notes.pdf",
    "bad/bomb.png",
}
SETTINGS = {"max_pixels": 100_000, "blur_threshold": 50.0, "empty_caption": "reject", "workers": 2}


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def texture(width: int, height: int, seed: int) -> Image.Image:
    """Random colour blocks: sharp edges, and a perceptual hash unlike any other seed's."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(blocks.repeat(8, 0).repeat(8, 1)[:height, :width])


def with_transparency(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, rgba.width // 2, rgba.height // 4))
    return rgba


def good_files() -> dict[str, bytes]:
    t = texture
    rotated = Image.Exif()
    rotated[0x0112] = 6
    frames = [t(64, 64, 7), t(64, 64, 70)]
    grey16 = Image.fromarray(np.asarray(t(64, 64, 9).convert("L")).astype(np.uint16) * 257)
    return {
        "art/rgb.jpg": encode(t(96, 80, 1), "JPEG", quality=95),
        "art/rgba.png": encode(with_transparency(t(80, 80, 2)), "PNG"),
        "art/la.png": encode(with_transparency(t(72, 72, 3)).convert("LA"), "PNG"),
        "art/l.png": encode(t(64, 64, 4).convert("L"), "PNG"),
        "art/p_transparent.png": encode(with_transparency(t(64, 64, 5)).quantize(64), "PNG"),
        "art/animated.gif": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "art/cmyk.jpg": encode(t(64, 64, 8).convert("CMYK"), "JPEG", quality=95),
        "art/cmyk.tif": encode(t(64, 64, 18).convert("CMYK"), "TIFF"),
        "art/grey16.png": encode(grey16, "PNG"),
        "art/grey16.tif": encode(Image.fromarray(np.asarray(grey16)[:, ::-1].copy()), "TIFF"),
        "art/rgb48.png": png_rgb16(np.asarray(t(64, 64, 10)).astype(np.uint16) * 257),
        "art/rgb.webp": encode(t(64, 64, 11), "WEBP", quality=95),
        "art/rgb.bmp": encode(t(64, 64, 12), "BMP"),
        "art/rgb.tiff": encode(t(64, 64, 13), "TIFF"),
        "art/rotated.jpg": encode(t(96, 64, 14), "JPEG", quality=95, exif=rotated),
        "art/big.png": encode(t(128, 128, 15), "PNG"),
    }


def bad_files(good: dict[str, bytes]) -> dict[str, bytes]:
    jpeg, png = encode(texture(96, 96, 20), "JPEG"), encode(texture(96, 96, 21), "PNG")
    return {
        "bad/empty.png": b"",
        "bad/truncated.jpg": jpeg[: len(jpeg) // 2],
        "bad/truncated.png": png[: len(png) // 2],
        "bad/fake.jpg": b"a caption, not a picture\n",
        "bad/notes.pdf": b"%PDF-1.4\n",
        "bad/bomb.png": encode(texture(400, 300, 22), "PNG"),
        "bad/small.png": encode(texture(32, 32, 23), "PNG"),
        "bad/wide.png": encode(texture(256, 64, 24), "PNG"),
        "art/blurry.png": encode(texture(96, 96, 25).filter(ImageFilter.GaussianBlur(8)), "PNG"),
        "art/uncaptioned.png": encode(texture(64, 64, 26), "PNG"),
        "art/zz_copy.png": good["art/rgba.png"],
        "art/big_resized.jpg": encode(Image.open(io.BytesIO(good["art/big.png"])).resize((96, 96)), "JPEG"),
    }


def write_corpus(root: Path) -> Path:
    good = good_files()
    for name, data in {**good, **bad_files(good)}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if name != "art/uncaptioned.png":
            path.with_suffix(".txt").write_text(f"a test picture called {path.stem}\n")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, s3_endpoint, _mlflow_db_template):
    """One ingest of the corpus, shared by the tests of this module (it is what they all look at)."""
    work = tmp_path_factory.mktemp("work")
    shutil.copyfile(_mlflow_db_template, work / "mlflow.db")
    raw = write_corpus(tmp_path_factory.mktemp("corpus"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ARTLORA_WORK_DIR", str(work))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        config = IngestConfig(source=str(raw), storage_root="s3://test-ingest-corpus", **SETTINGS)
        result = ingest.run(config)
        tracking.configure()
        client = MlflowClient()
        run = client.search_runs([client.get_experiment_by_name("artlora").experiment_id])[0]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "curation")}
    store = storage.get_storage()
    manifest = {
        item["source"]: item for item in store.get_json(storage.join(result.dataset_uri, "manifest.json"))["items"]
    }
    return {
        "raw": raw,
        "result": result,
        "manifest": manifest,
        "report": store.get_json(result.report_uri),
        "html": store.get_bytes(result.report_html_uri).decode(),
        "run": run,
        "artifacts": artifacts,
    }


def test_every_input_is_accepted_or_rejected_once(corpus):
    report, result = corpus["report"], corpus["result"]
    listed = report["accepted_files"] + [r["file"] for r in report["rejections"]]
    assert sorted(listed) == sorted(GOOD | BAD)
    assert (result.accepted, result.rejected) == (len(GOOD), len(BAD))
    images = len(GOOD) + len(BAD) - 1  # all but the .pdf
    assert (result.decoded, result.from_index) == (images, 0)
    assert report["by_reason"] == {code: sum(1 for c, _ in BAD.values() if c == code) for code, _ in BAD.values()}


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_bad_file_is_rejected_with_its_reason(corpus, name):
    code, words = BAD[name]
    rejection = next(r for r in corpus["report"]["rejections"] if r["file"] == name)
    assert rejection["code"] == code
    assert words in rejection["reason"], rejection["reason"]


@pytest.mark.parametrize("name", sorted(GOOD))
def test_each_format_and_colour_mode_is_accepted_upright(corpus, name):
    item = corpus["manifest"][name]
    assert (item["width"], item["height"]) == GOOD[name]
    assert item["bucket"] == ([128, 128] if name == "art/big.png" else [64, 64]) and item["style"] == "art"
    assert item["caption"] == f"a test picture called {Path(name).stem}"
    assert storage.get_storage().get_bytes(item["file"]) == (corpus["raw"] / name).read_bytes()


def test_near_duplicates_keep_the_larger_image(corpus):
    assert "art/big.png" in corpus["manifest"]
    assert corpus["report"]["near_duplicate_clusters"] == [["art/big.png", "art/big_resized.jpg"]]


def test_report_counts_styles_and_buckets(corpus):
    report = corpus["report"]
    assert sum(report["by_style"]["art"].values()) == len(GOOD)
    assert report["by_bucket"] == {"128x128": 1, "64x64": len(GOOD) - 1}
    assert report["rejected_by_style"]["bad"] == {
        code: sum(1 for n, (c, _) in BAD.items() if n.startswith("bad/") and c == code)
        for code in {c for n, (c, _) in BAD.items() if n.startswith("bad/")}
    }
    assert report["settings"]["max_pixels"] == SETTINGS["max_pixels"] and "workers" not in report["settings"]


def test_html_report_is_self_contained_with_thumbnails_of_rejected_images(corpus):
    page = corpus["html"]
    assert not re.search(r"""(src|href)=['"](?!data:)""", page), "everything is inline"
    assert "http://" not in page and "https://" not in page
    for name, (_, words) in BAD.items():
        assert name in page and words.replace(">", "&gt;") in page
    pictures = re.findall(r"""src=["']data:image/jpeg;base64,([^'"]+)["']""", page)
    assert len(pictures) == len(set(BAD) - UNDECODABLE)
    for data in pictures:
        with Image.open(io.BytesIO(base64.b64decode(data))) as thumb:
            assert max(thumb.size) <= 96
    assert page.count("no preview") == len(UNDECODABLE)


def test_report_and_page_are_logged_to_mlflow(corpus):
    run = corpus["run"]
    assert corpus["artifacts"] == {"curation/report.json", "curation/report.html"}
    assert run.data.metrics["accepted"] == len(GOOD) and run.data.metrics["decoded"] == len(GOOD) + len(BAD) - 1
    assert run.data.metrics["rejected_near_duplicate"] == 1
    assert run.data.tags["artlora.dataset_fingerprint"] == corpus["result"].fingerprint
