"""Ingest and curate: raw images in, a versioned dataset out, with every input file accounted for.

Under `<storage_root>/datasets/`:
- `<fingerprint>/manifest.json`: every accepted image with its caption, style, split and training bucket, and
  the background colour transparent images were composited on; then the completion marker, written last.
- `<fingerprint>/reports/<hash>.json` and `.html`: one report per distinct ingest, every input file accepted or
  rejected with a reason (the HTML page with thumbnails of the rejected ones); also logged to MLflow.
- `blobs/<sha256>.<ext>`: the original bytes of every decodable image, stored once by content, so versions
  share unchanged images and a re-ingest uploads only new ones.
- `index/<key>.json`: the scan index (content hash -> measurements), so a re-ingest decodes only new or
  changed files; `thumbs/`: report thumbnails, by content hash.

The fingerprint hashes the accepted images' content, names, captions, styles, splits and buckets and the
curation settings: the same inputs give the same version, any change a new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass

from artlora import contracts, cpus
from artlora.config import IngestConfig
from artlora.data import dataset
from artlora.data.dataset import Item
from artlora.io import runs, storage, tracking
from artlora.stages.ingest import (
    curation,
    inspection,
    regularisation,
    report,
    report_html,
    scan_index,
    scanning,
    split,
)
from artlora.stages.ingest.scanning import Scanned
from artlora.stages.ingest.sources import SourceError, SourceFile, list_source

log = logging.getLogger(__name__)

# Bumped when curation logic changes, so datasets curated by older code get new fingerprints.
CURATION_VERSION = 2
OPTIONAL = frozenset(dataset.OPTIONAL_FIELDS)


@dataclass(frozen=True)
class IngestResult:
    dataset_uri: str
    fingerprint: str
    accepted: int
    rejected: int
    reused: bool  # the dataset version existed already
    report_uri: str
    report_html_uri: str
    decoded: int  # image files decoded in this run (new or changed bytes)
    from_index: int  # image files whose measurements the scan index already held


def run(config: IngestConfig) -> IngestResult:
    tracking.check()  # before any work: a tracking store that does not answer fails at once
    listing = list_source(config.source, config.allow_outside_links, all_captions=config.captions == "all")
    listing = regularisation.with_regularisation(listing, config)
    image_files = [file for file in listing.files if file.is_image and file.problem is None]
    if not image_files:
        raise SourceError(
            f"no image files under ingest.source={config.source!r} (give the folder or prefix of the images)"
        )
    store = storage.get_storage()
    scans, decoded = scan(image_files, config, store)
    curated = curation.curate(listing.files, scans, config, _blobs(config))
    if not curated.kept:
        counts = ", ".join(f"{code}: {n}" for code, n in sorted(Counter(r.code for r in curated.rejections).items()))
        first = "; ".join(f"{r.file}: {r.reason}" for r in curated.rejections[:5])
        raise SourceError(f"every image under {config.source} was rejected ({counts}); first: {first}")
    check_balance_styles(config, {c.style for c in curated.kept})
    kept = [_item(c, config) for c in curated.kept]
    items = split.split(kept, config.val_fraction, config.seed, curated.groups, {contracts.REGULARISATION_STYLE})
    fp = fingerprint(items, config)
    dataset_uri = storage.join(config.storage_root, "datasets", fp)
    summary = report.build(listing, curated, items, config)
    with runs.stage_run("ingest", config, tags={contracts.DATASET_FINGERPRINT_TAG: fp}):
        report_uri, html_uri = _store_report(store, dataset_uri, summary, curated, config)
        reused = dataset.write(store, dataset_uri, items, config.background)
        result = IngestResult(
            dataset_uri=dataset_uri,
            fingerprint=fp,
            accepted=len(items),
            rejected=len(curated.rejections),
            reused=reused,
            report_uri=report_uri,
            report_html_uri=html_uri,
            decoded=decoded,
            from_index=len(image_files) - decoded,
        )
        _log(store, result, summary)
    return result


def _log(store: storage.Storage, result: IngestResult, summary: dict) -> None:
    """The run's counts and reports to MLflow, and one line saying what happened."""
    runs.log_metrics(
        {
            "inputs": summary["inputs"],
            "accepted": result.accepted,
            "rejected": result.rejected,
            "decoded": result.decoded,
            "from_index": result.from_index,
            **{f"rejected_{code}": n for code, n in summary["by_reason"].items()},
        }
    )
    runs.log_bytes(store.get_bytes(result.report_uri), "curation/report.json")
    runs.log_bytes(store.get_bytes(result.report_html_uri), "curation/report.html")
    log.info(
        "dataset %s: %d accepted, %d rejected; decoded %d new or changed image files, %d known from the index%s",
        result.dataset_uri,
        result.accepted,
        result.rejected,
        result.decoded,
        result.from_index,
        " (version already stored)" if result.reused else "",
    )


def scan(files: list[SourceFile], config: IngestConfig, store: storage.Storage) -> tuple[dict[str, Scanned], int]:
    """Every image file's scan with its outcome (from the index or decoded now); and how many were decoded."""
    uri = scan_index.index_uri(config.storage_root, config.background)
    index = scan_index.load(store, uri)
    settings = scanning.ScanSettings(
        config.background, config.max_pixels, _blobs(config), scan_index.reusable(index, config.max_pixels)
    )
    workers = min(config.workers or cpus.usable(), len(files))
    scans: dict[str, Scanned] = {}
    new: scan_index.Index = {}
    decoded = 0
    for result in scanning.scan(files, settings, workers):
        if result.outcome is None:
            result = dataclasses.replace(result, outcome=index[result.sha256])
        else:
            decoded += 1
            if result.sha256:  # a file that could not be read has no hash and nothing to remember
                new[result.sha256] = result.outcome
        scans[result.name] = result
    scan_index.save(store, uri, new)
    return scans, decoded


def fingerprint(items: list[Item], config: IngestConfig) -> str:
    """Hash of the accepted content, file names, captions, styles, splits, buckets and curation settings.

    Rejected files are not part of it: adding a broken file to the source does not make a new dataset. The
    report of each ingest is stored beside the version under its own hash, so every input is accounted for.
    """
    settings = {
        "curation_version": CURATION_VERSION,
        "measure_version": inspection.MEASURE_VERSION,
        **report.curation_settings(config),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for item in sorted(items, key=lambda item: (item.sha256, item.source)):
        fields: tuple = (item.sha256, item.source, item.caption, item.style, item.split, *item.bucket)
        # The fields added later count only when set, so versions curated before them keep their fingerprint.
        fields += tuple(f"{name}={value}" for name, value in dataset.item_record(item).items() if name in OPTIONAL)
        digest.update(("\0".join(map(str, fields)) + "\n").encode())
    return digest.hexdigest()[:24]


def _blobs(config: IngestConfig) -> str:
    return storage.join(config.storage_root, "datasets", "blobs")


def check_balance_styles(config: IngestConfig, styles: set[str]) -> None:
    """A style named in style_repeats or style_loss_weights that the accepted images do not have is a typo."""
    for setting in ("style_repeats", "style_loss_weights"):
        for style in getattr(config, setting):
            if style not in styles:
                raise SourceError(
                    f"ingest.{setting} names style {style!r}, which the dataset does not have (its styles: "
                    f"{', '.join(sorted(styles))})"
                )


def _item(candidate: curation.Candidate, config: IngestConfig) -> Item:
    outcome = candidate.outcome
    style = candidate.file.style
    return Item(
        sha256=candidate.sha256,
        source=candidate.file.name,
        file=candidate.blob,
        caption=candidate.caption.text,
        style=style,
        width=outcome["width"],
        height=outcome["height"],
        bucket=candidate.bucket,
        more_captions=tuple(caption.text for caption in candidate.more_captions),
        repeats=config.style_repeats.get(style, 1),
        loss_weight=(
            config.regularisation_weight
            if style == contracts.REGULARISATION_STYLE
            else config.style_loss_weights.get(style, 1.0)
        ),
    )


def _store_report(
    store: storage.Storage, dataset_uri: str, summary: dict, curated: curation.Curated, config: IngestConfig
) -> tuple[str, str]:
    """Store the JSON and HTML reports, named by the JSON's content (an existing pair is this very report)."""
    report_bytes = json.dumps(summary, indent=2, sort_keys=True).encode()
    report_uri = storage.join(dataset_uri, "reports", f"{hashlib.sha256(report_bytes).hexdigest()[:16]}.json")
    html_uri = report_uri.removesuffix(".json") + ".html"
    if store.exists(html_uri):  # written after the JSON: its presence means both are whole
        return report_uri, html_uri
    thumbs = storage.join(config.storage_root, "datasets", "thumbs")
    pictures = report_html.thumbnails(store, curated.rejections, thumbs, config.background)
    title = f"artlora curation report: dataset {dataset_uri.rsplit('/', 1)[-1]}"
    store.put_bytes(report_uri, report_bytes, content_type="application/json")
    store.put_bytes(html_uri, report_html.render(summary, pictures, title).encode(), content_type="text/html")
    return report_uri, html_uri
