"""Logging set-up shared by the CLI and the pipeline components."""

from __future__ import annotations

import logging


def configure(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Libraries' chatter (HTTP requests, migrations) would bury the stages' own messages.
    for noisy in ("urllib3", "botocore", "werkzeug", "alembic", "httpx", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
