"""Curation verdicts: which scanned files become training images, and why each other one does not.

Every input ends as exactly one `Candidate` (kept) or one `Rejection` (a code from `REASONS` and a sentence
naming the setting involved). The checks run in this order, and a file gets the first that fails: a symbolic
link leaving the source, looping or leading nowhere; not an image file; empty, not an image, unreadable, too many
pixels; too small; aspect ratio; blur; no bucket; caption missing; exact duplicate (the first by name is kept);
near duplicate (the largest image is kept); the per-style cap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from artlora.config import IngestConfig
from artlora.stages.ingest import buckets, captions, near_duplicates, split
from artlora.stages.ingest.captions import Caption
from artlora.stages.ingest.inspection import Outcome
from artlora.stages.ingest.scanning import Scanned, blob_uri
from artlora.stages.ingest.sources import SourceFile

REASONS = {
    "not_image": "not an image",
    "empty": "empty file",
    "unreadable": "unreadable or truncated",
    "too_many_pixels": "too many pixels (decompression-bomb guard)",
    "too_small": "below the minimum resolution",
    "aspect_ratio": "aspect ratio beyond the limit",
    "blurry": "too blurry",
    "no_bucket": "no training bucket fits",
    "caption_missing": "caption missing",
    "exact_duplicate": "exact duplicate",
    "near_duplicate": "near duplicate",
    "style_cap": "over the per-style cap",
    "outside_source": "a link leaving the source folder",
    "link_loop": "a symbolic link loop",
    "broken_link": "a symbolic link to nothing",
}


@dataclass(frozen=True, kw_only=True)
class Candidate:
    file: SourceFile
    sha256: str
    outcome: Outcome
    caption: Caption
    bucket: buckets.Bucket
    blob: str
    more_captions: tuple[Caption, ...] = ()  # its other captions (ingest.captions: all), distinct from the first

    @property
    def pixels(self) -> int:
        return self.outcome["width"] * self.outcome["height"]

    @property
    def style(self) -> str:  # what the per-style cap groups by
        return self.file.style


@dataclass(frozen=True)
class Rejection:
    file: str
    code: str
    reason: str
    style: str
    blob: str = ""  # the stored original bytes, when the image could be decoded (for a thumbnail)


@dataclass
class Curated:
    kept: list[Candidate] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    groups: dict[str, str] = field(default_factory=dict)  # sha256 -> near-duplicate group, for the split
    clusters: list[list[str]] = field(default_factory=list)  # file names of each near-duplicate cluster


def curate(files: list[SourceFile], scanned: dict[str, Scanned], config: IngestConfig, blobs: str) -> Curated:
    """Judge every file; `scanned` maps an image file's name to its scan with the outcome filled in."""
    out = Curated()
    passed: list[Candidate] = []
    for file in sorted(files, key=lambda f: f.name):
        verdict = judge(file, scanned.get(file.name), config, blobs)
        if isinstance(verdict, Candidate):
            passed.append(verdict)
        else:
            out.rejections.append(verdict)
    passed = _drop_exact_duplicates(passed, out)
    passed = _resolve_near_duplicates(passed, config, out)
    kept, over = split.cap_per_style(passed, config.max_per_style, config.seed)
    for c in over:
        reason = f"over the per-style cap: {config.max_per_style} images of {c.style!r} kept (ingest.max_per_style)"
        out.rejections.append(_reject(c, "style_cap", reason))
    out.kept = sorted(kept, key=lambda c: c.file.name)
    out.rejections.sort(key=lambda r: r.file)
    return out


def judge(file: SourceFile, scan: Scanned | None, config: IngestConfig, blobs: str) -> Candidate | Rejection:
    """The checks of one file alone (duplicates need the others)."""
    if file.problem is not None:
        return Rejection(file.name, *file.problem, file.style)
    if not file.is_image:
        return Rejection(file.name, "not_image", f"not an image file ({file.suffix or 'no extension'})", file.style)
    assert scan is not None and scan.outcome is not None, f"{file.name} was not scanned"
    outcome = scan.outcome
    if "code" in outcome:
        return Rejection(file.name, outcome["code"], outcome["reason"], file.style)
    blob = blob_uri(blobs, scan.sha256, outcome["format"]) if outcome["decoded"] else ""
    problem = image_problem(outcome, config)
    bucket = buckets.assign(outcome["width"], outcome["height"], config.bucket_resolution, config.bucket_max_upscale)
    if problem is None and bucket is None:
        problem = "no_bucket", _no_bucket(outcome, config)
    caption = captions.resolve(file.caption, file.caption_source, file.style, config)
    if problem is None and isinstance(caption, str):
        problem = "caption_missing", caption
    if problem is not None:
        return Rejection(file.name, *problem, file.style, blob)
    assert bucket is not None and not isinstance(caption, str)  # either would have been a problem above
    more = _more_captions(file, caption, config)
    return Candidate(
        file=file, sha256=scan.sha256, outcome=outcome, caption=caption, bucket=bucket, blob=blob, more_captions=more
    )


def _more_captions(file: SourceFile, first: Caption, config: IngestConfig) -> tuple[Caption, ...]:
    """The image's other captions as training will use them (trigger word, truncation), each text once."""
    out: dict[str, Caption] = {}
    for text, source in file.more_captions:
        caption = captions.resolve(text, source, file.style, config)
        if isinstance(caption, Caption) and caption.text != first.text:
            out.setdefault(caption.text, caption)
    return tuple(out.values())


def image_problem(outcome: Outcome, config: IngestConfig) -> tuple[str, str] | None:
    """(code, reason) for the first size, shape or sharpness limit a measured image breaks, or None."""
    width, height = outcome["width"], outcome["height"]
    size = f"{width}x{height} px"
    if width * height > config.max_pixels:
        mpx = width * height / 1e6
        return "too_many_pixels", (
            f"too many pixels: {size} = {mpx:.1f} Mpx, over {config.max_pixels / 1e6:.1f} Mpx (ingest.max_pixels)"
        )
    if min(width, height) < config.min_size:
        return "too_small", f"too small: {size}, the minimum side is {config.min_size} px (ingest.min_size)"
    ratio = max(width, height) / min(width, height)
    if ratio > config.max_aspect_ratio:
        return "aspect_ratio", (
            f"aspect ratio {ratio:.2f}:1 ({size}) is over {config.max_aspect_ratio}:1 (ingest.max_aspect_ratio)"
        )
    if config.blur_threshold > 0 and outcome["blur"] < config.blur_threshold:
        return "blurry", (
            f"too blurry: variance of the Laplacian {outcome['blur']:.1f} is below {config.blur_threshold} "
            "(ingest.blur_threshold)"
        )
    return None


def _no_bucket(outcome: Outcome, config: IngestConfig) -> str:
    return (
        f"no training bucket: {outcome['width']}x{outcome['height']} px cannot fill even {buckets.STEP}x"
        f"{buckets.STEP} without enlarging it more than {config.bucket_max_upscale}x (ingest.bucket_max_upscale)"
    )


def _reject(candidate: Candidate, code: str, reason: str) -> Rejection:
    return Rejection(candidate.file.name, code, reason, candidate.style, candidate.blob)


def _drop_exact_duplicates(candidates: list[Candidate], out: Curated) -> list[Candidate]:
    first: dict[str, str] = {}
    kept = []
    for c in candidates:  # sorted by name: the first copy by name is kept
        if c.sha256 in first:
            out.rejections.append(_reject(c, "exact_duplicate", f"exact duplicate of {first[c.sha256]}"))
        else:
            first[c.sha256] = c.file.name
            kept.append(c)
    return kept


def _resolve_near_duplicates(candidates: list[Candidate], config: IngestConfig, out: Curated) -> list[Candidate]:
    """Reject all but the largest image of each cluster, or record the clusters for the split."""
    rejected: set[str] = set()
    for members in near_duplicates.clusters([c.outcome["phash"] for c in candidates], config.near_duplicate_distance):
        cluster = [candidates[i] for i in members]
        keep = min(cluster, key=lambda c: (-c.pixels, c.file.name))
        out.clusters.append([c.file.name for c in cluster])
        for c in cluster:
            if config.near_duplicates == "keep_together":
                out.groups[c.sha256] = min(m.sha256 for m in cluster)
            elif c is not keep:
                distance = near_duplicates.hamming(c.outcome["phash"], keep.outcome["phash"])
                reason = (
                    f"near duplicate of {keep.file.name} (perceptual-hash distance {distance}; clusters within "
                    f"{config.near_duplicate_distance} bits keep their largest image, ingest.near_duplicate_distance)"
                )
                out.rejections.append(_reject(c, "near_duplicate", reason))
                rejected.add(c.file.name)
    return [c for c in candidates if c.file.name not in rejected]
