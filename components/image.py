"""The container image every artlora component runs in: the one place that names it."""

from artlora import __version__

REGISTRY = "ghcr.io/artlora"
BASE_IMAGE = f"{REGISTRY}/artlora:{__version__}"
