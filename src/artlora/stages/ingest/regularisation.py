"""Regularisation images (ingest.regularisation_source): ordinary images of what the style prompts paint, with
their own captions, trained alongside the styles at ingest.regularisation_weight so the adapter keeps the base's
answers to such prompts (kohya sd-scripts' `is_reg` folders, DreamBooth's class images for prior preservation).

Their source is listed like the style source, and its files join the inputs under the reserved style
`contracts.REGULARISATION_STYLE`: each name gets it as its first folder (`regularisation/<name under the
source>`), so curation judges them like any other input and their sub-folders are not styles. The split puts
them all in training; captions are their own (no trigger word, no fallback).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from artlora.config import IngestConfig
from artlora.contracts import REGULARISATION_STYLE
from artlora.stages.ingest.sources import Listing, SourceError, list_source

PREFIX = REGULARISATION_STYLE + "/"


def with_regularisation(listing: Listing, config: IngestConfig) -> Listing:
    """The style source's listing, with the regularisation source's files (renamed under the reserved style) and
    notes added; a style folder named like the reserved style is refused."""
    if clash := next((file.name for file in listing.files if file.style == REGULARISATION_STYLE), None):
        raise SourceError(
            f"ingest.source has a style folder {REGULARISATION_STYLE!r} ({clash}), the name reserved for the "
            "regularisation images (rename the folder; give regularisation images as ingest.regularisation_source)"
        )
    if not config.regularisation_source:
        return listing
    setting = "ingest.regularisation_source"
    extra = list_source(config.regularisation_source, config.allow_outside_links, config.captions == "all", setting)
    files = [dataclasses.replace(file, name=PREFIX + file.name) for file in extra.files]
    if not any(file.is_image for file in files):
        raise SourceError(
            f"no image files under ingest.regularisation_source={config.regularisation_source!r} (give the folder "
            "or prefix of the regularisation images)"
        )
    notes = listing.notes + [PREFIX + note for note in extra.notes]
    return Listing(sorted(listing.files + files, key=lambda file: file.name), notes)


def is_regularisation(name: str) -> bool:
    """Whether an input (by its name in the listing) is a regularisation image."""
    return name.startswith(PREFIX)


def summary(config: IngestConfig, listing: Listing, accepted: list[str], rejected: list[str]) -> dict[str, Any]:
    """The report's account of the regularisation images: their count, the accepted and rejected, their weight."""
    return {
        "style": REGULARISATION_STYLE,
        "loss_weight": config.regularisation_weight,
        "inputs": sum(is_regularisation(file.name) for file in listing.files),
        "accepted": sum(map(is_regularisation, accepted)),
        "rejected": sum(map(is_regularisation, rejected)),
    }
