"""The curation report as one self-contained HTML page: counts, and a thumbnail of every rejected image.

Thumbnails are small JPEGs inlined as data URIs, made from the stored original bytes with the same decoding as
training (`images.open_rgb`), and kept under `<storage_root>/datasets/thumbs/` by content hash so a later
report never decodes the same file again. Files that could not be decoded are listed without one.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import Any

from PIL import Image

from artlora.data import images
from artlora.io import storage
from artlora.stages.ingest.curation import Rejection

THUMBNAIL_SIDE = 96
MAX_THUMBNAILS = 500  # rejections beyond this are listed without a picture, to keep the page light
_FETCHERS = 8

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:10px}.card{width:200px;font-size:12px;word-break:break-all}
.card img,.none{width:96px;height:96px;object-fit:contain;background:#eee;display:block}
.none{display:flex;align-items:center;justify-content:center;color:#888}
"""


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
    """The page: summary, counts by reason, style and bucket, caption notes, and the rejected files."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>",
        f"<p>{report['inputs']} inputs: <b>{report['accepted']} accepted</b>, {report['rejected']} rejected.</p>",
        _table("Rejected, by reason", ["reason", "code", "files"], _reason_rows(report)),
        _table("Accepted, by style", ["style", "train", "val", "rejected"], _style_rows(report)),
        _table("Accepted, by training bucket", ["bucket (w x h px)", "images"], report["by_bucket"].items()),
        _captions(report["captions"]),
        _list("Notes on captions and metadata", report["notes"]),
        _list("Near-duplicate clusters", [", ".join(c) for c in report["near_duplicate_clusters"]]),
        _rejected(report, thumbs),
        "</body></html>",
    ]
    return "\n".join(parts)


def _e(value: object) -> str:
    return html.escape(str(value))


def _table(heading: str, header: list[str], rows: Any) -> str:
    body = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    head = "".join(f"<th>{_e(cell)}</th>" for cell in header)
    return f"<h2>{_e(heading)}</h2><table><tr>{head}</tr>{body or '<tr><td>none</td></tr>'}</table>"


def _list(heading: str, lines: list[str]) -> str:
    if not lines:
        return ""
    return f"<h2>{_e(heading)}</h2><ul>" + "".join(f"<li>{_e(line)}</li>" for line in lines) + "</ul>"


def _reason_rows(report: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    return [(report["reasons"][code], code, count) for code, count in report["by_reason"].items()]


def _style_rows(report: Mapping[str, Any]) -> list[tuple[str, int, int, int]]:
    styles = sorted(set(report["by_style"]) | set(report["rejected_by_style"]))
    rows = []
    for style in styles:
        split = report["by_style"].get(style, {"train": 0, "val": 0})
        rows.append((style, split["train"], split["val"], sum(report["rejected_by_style"].get(style, {}).values())))
    return rows


def _captions(captions: Mapping[str, Any]) -> str:
    sources = ", ".join(f"{source}: {count}" for source, count in captions["by_source"].items())
    over = [f"{c['file']}: {c['tokens']} tokens, {c['action']}" for c in captions["over_limit"]]
    intro = (
        f"<h2>Captions</h2><p>From {_e(sources) or 'nowhere'}. Token limit {captions['token_limit']}; "
        f"counts are an {_e(captions['token_count'])}.</p>"
    )
    return intro + _list(f"Captions over the token limit ({len(over)})", over)


def _rejected(report: Mapping[str, Any], thumbs: Mapping[str, str]) -> str:
    cards = []
    for r in report["rejections"]:
        uri = thumbs.get(r["file"])
        picture = f"<img src='{uri}' alt=''>" if uri else "<div class='none'>no preview</div>"
        cards.append(f"<div class='card'>{picture}<b>{_e(r['file'])}</b><br>{_e(r['reason'])}</div>")
    return f"<h2>Rejected files ({len(cards)})</h2><div class='grid'>{''.join(cards)}</div>"
