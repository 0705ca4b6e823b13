"""The curation report as JSON: every input accounted for, with counts by reason, by style and by bucket.

The report depends only on the inputs and the settings (not on timing, nor on which files the scan index
already knew), so an identical ingest gives identical bytes and is stored once. What a run decoded is in the
stage's result, its log line and its MLflow metrics.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from artlora.config import IngestConfig
from artlora.stages.ingest import buckets, captions, curation, regularisation
from artlora.stages.ingest.sources import Listing

# Settings that are not about curation: where the inputs are read from, where the run is logged, how fast.
# model_name shapes captions only where it becomes one, and the captions are in the fingerprint.
NOT_CURATION = frozenset({"source", "regularisation_source", "experiment", "workers", "model_name"})


def curation_settings(config: IngestConfig) -> dict[str, Any]:
    """The settings that shape a dataset version (the dump leaves out the settings added later while they are at
    their defaults, so the versions stored before them keep their fingerprint)."""
    return config.model_dump(mode="json", exclude=set(NOT_CURATION))


def build(listing: Listing, curated: curation.Curated, items: list[Any], config: IngestConfig) -> dict[str, Any]:
    """The report of one ingest; `items` are the accepted items with their split and bucket."""
    rejections = [_rejection(r) for r in curated.rejections]
    by_reason = Counter(r.code for r in curated.rejections)
    # Only with regularisation images, so the reports of ingests without them keep their bytes.
    extra = {}
    if config.regularisation_source:
        accepted = [item.source for item in items]
        rejected = [r.file for r in curated.rejections]
        extra["regularisation"] = regularisation.summary(config, listing, accepted, rejected)
    return {
        **extra,
        "inputs": len(listing.files),
        "accepted": len(items),
        "rejected": len(rejections),
        "by_reason": {code: by_reason[code] for code in curation.REASONS if by_reason[code]},
        "reasons": {code: title for code, title in curation.REASONS.items() if by_reason[code]},
        "by_style": _by_style(items),
        "balance": _balance(items),
        "rejected_by_style": _rejected_by_style(curated),
        "by_bucket": dict(sorted(Counter(buckets.label(item.bucket) for item in items).items())),
        "captions": _captions(curated, config),
        "near_duplicate_clusters": curated.clusters,
        "notes": listing.notes,
        "settings": curation_settings(config),
        "accepted_files": sorted(item.source for item in items),
        "rejections": rejections,
    }


def _rejection(r: curation.Rejection) -> dict[str, Any]:
    entry: dict[str, Any] = {"file": r.file, "code": r.code, "reason": r.reason}
    if regularisation.is_regularisation(r.file):
        entry["regularisation"] = True
    return entry


def _by_style(items: list[Any]) -> dict[str, dict[str, int]]:
    by_style: dict[str, dict[str, int]] = {}
    for item in sorted(items, key=lambda i: i.style):
        by_style.setdefault(item.style, {"train": 0, "val": 0})[item.split] += 1
    return by_style


def _balance(items: list[Any]) -> dict[str, dict[str, Any]]:
    """Per style: training images, repeats, the views of them an epoch trains on (images x repeats) and their
    loss weight (ingest.style_repeats, ingest.style_loss_weights)."""
    out: dict[str, dict[str, Any]] = {}
    for item in sorted(items, key=lambda i: i.style):
        row = out.setdefault(item.style, {"train_images": 0, "repeats": item.repeats, "loss_weight": item.loss_weight})
        row["train_images"] += item.split == "train"
    for row in out.values():
        row["effective_per_epoch"] = row["train_images"] * row["repeats"]
    return out


def _rejected_by_style(curated: curation.Curated) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in sorted(curated.rejections, key=lambda r: (r.style, r.code)):
        counts = out.setdefault(r.style, {})
        counts[r.code] = counts.get(r.code, 0) + 1
    return out


def _captions(curated: curation.Curated, config: IngestConfig) -> dict[str, Any]:
    kept = curated.kept
    over = [c for c in kept if c.caption.original_tokens > config.caption_token_limit]
    return {
        "token_limit": config.caption_token_limit,
        "token_count": captions.TOKEN_COUNT_METHOD,
        "by_source": dict(sorted(Counter(c.caption.source for c in kept).items())),
        "per_image": dict(sorted(Counter(str(1 + len(c.more_captions)) for c in kept).items())),
        "over_limit": [
            {
                "file": c.file.name,
                "tokens": c.caption.original_tokens,
                "action": f"truncated to {c.caption.tokens} tokens" if c.caption.truncated else "kept whole",
            }
            for c in over
        ],
    }
