"""What every command and pipeline task does first, in the CLI's `main` and in each KFP component: logging, and
thread counts for the CPUs the process may really use (cpus.py: a container's quota, not the node's cores)."""

from __future__ import annotations

import logging

from artlora import cpus


def configure(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Libraries' chatter (HTTP requests, migrations) would bury the stages' own messages.
    for noisy in ("urllib3", "botocore", "werkzeug", "alembic", "httpx", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cpus.apply()
