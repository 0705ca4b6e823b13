"""The curation report as one self-contained HTML page: counts, and a thumbnail of every rejected image.

Thumbnails are small JPEGs inlined as data URIs, made from the stored original bytes with the same decoding as
training (`images.open_rgb`), and kept under `<storage_root>/datasets/thumbs/` by content hash so a later
report never decodes the same file again. Files that could not be decoded are listed without one.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import Any

from PIL import Image

from artlora import pages
from artlora.contracts import REGULARISATION_STYLE
from artlora.data import images
from artlora.io import storage
from artlora.stages.ingest.curation import Rejection

THUMBNAIL_SIDE = 96
MAX_THUMBNAILS = 500  # rejections beyond this are listed without a picture, to keep the page light
_FETCHERS = 8


def thumbnails(
    store: storage.Storage, rejections: list[Rejection], thumbs: str, background: images.RGB
) -> dict[str, str]:
    """file name -> JPEG data URI, for rejected files whose bytes are stored (at most MAX_THUMBNAILS)."""
    wanted = [r for r in rejections if r.blob][:MAX_THUMBNAILS]
    key = "".join(f"{c:02x}" for c in background)

    def one(rejection: Rejection) -> tuple[str, str]:
        uri = storage.join(thumbs, f"{PurePosixPath(rejection.blob).stem}-{key}.jpg")
        try:
            data = store.get_bytes(uri)
        except storage.MissingObjectError:
            data = make_thumbnail(store.get_bytes(rejection.blob), background)
            store.put_bytes(uri, data, content_type="image/jpeg")
        return rejection.file, "data:image/jpeg;base64," + base64.b64encode(data).decode()

    if not wanted:
        return {}
    with ThreadPoolExecutor(min(_FETCHERS, len(wanted))) as pool:
        return dict(pool.map(one, wanted))


def make_thumbnail(data: bytes, background: images.RGB) -> bytes:
    image = images.open_rgb(data, background)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=75)
    return out.getvalue()


def render(report: Mapping[str, Any], thumbs: Mapping[str, str], title: str) -> str:
    """The page: summary, counts by reason, style and bucket, caption notes, and the rejected files
    (`pages/templates/ingest.html`)."""
    captions = report["captions"]
    return pages.render(
        "ingest.html",
        title=title,
        report=report,
        reasons=[(report["reasons"][code], code, count) for code, count in report["by_reason"].items()],
        styles=_style_rows(report),
        style_columns=STYLE_COLUMNS,
        caption_sources=", ".join(f"{source}: {count}" for source, count in captions["by_source"].items()),
        over_limit=[f"{c['file']}: {c['tokens']} tokens, {c['action']}" for c in captions["over_limit"]],
        clusters=[", ".join(c) for c in report["near_duplicate_clusters"]],
        rejections=[{**r, "thumb": thumbs.get(r["file"], "")} for r in report["rejections"]],
    )


STYLE_COLUMNS = ["style", "train", "val", "rejected", "repeats", "train images per epoch", "loss weight"]


def _style_rows(report: Mapping[str, Any]) -> list[tuple]:
    """Per style its accepted and rejected images, and its balance: repeats, effective training images per
    epoch (train x repeats), loss weight."""
    styles = sorted(set(report["by_style"]) | set(report["rejected_by_style"]))
    rows = []
    for style in styles:
        split = report["by_style"].get(style, {"train": 0, "val": 0})
        balance = report["balance"].get(style, {"repeats": 1, "effective_per_epoch": 0, "loss_weight": 1.0})
        rejected = sum(report["rejected_by_style"].get(style, {}).values())
        rows.append(
            (
                f"{style} (regularisation images, not a style)" if style == REGULARISATION_STYLE else style,
                split["train"],
                split["val"],
                rejected,
                balance["repeats"],
                balance["effective_per_epoch"],
                balance["loss_weight"],
            )
        )
    return rows
