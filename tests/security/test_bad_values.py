"""Absurd values and unsafe object prefixes are refused when the config is validated: one line naming the field
and the bound, within seconds, before any service or task starts (no work folder is even made).

Before this work `train.max_steps=1000000000000` was accepted and ingest and augment ran, and
`ingest.source=s3://artlora/../etc` was refused only inside the pipeline's check task (issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from service_environment import without_services

DEMO = Path(__file__).parents[2] / "configs" / "demo.yaml"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_steps=1000000000000", "train.max_steps: Input should be less than or equal to 1000000"),
        ("train.warmup_steps=99999999999", "train.warmup_steps: Input should be less than or equal to 1000000"),
        ("augment.resolution=100000", "augment.resolution: Input should be less than or equal to 2048"),
        ("ingest.max_per_style=100000000000", "ingest.max_per_style: Input should be less than or equal to 10000000"),
        ("ingest.source=s3://artlora/../etc", "ingest.source: Value error, 's3://artlora/../etc' is not a safe object"),
        ("storage_root=s3://artlora/a//b", "'s3://artlora/a//b' is not a safe object prefix"),
        ("ingest.source=s3://artlora/x/./y", "'s3://artlora/x/./y' is not a safe object prefix"),
    ],
)
def test_refused_at_validation_before_anything_starts(override, message, tmp_path):
    environment = {**without_services(os.environ), "ARTLORA_WORK_DIR": str(tmp_path / "work")}
    command = [sys.executable, "-m", "artlora.cli", "pipeline", "run", "--local", "--config", str(DEMO)]
    started = time.monotonic()
    done = subprocess.run([*command, "--set", override], capture_output=True, text=True, env=environment, timeout=60)
    seconds = time.monotonic() - started

    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("artlora pipeline run: error: invalid config") and message in line, line
    assert seconds < 3 + 2  # under 3 s here; the margin is for a loaded machine
    assert not (tmp_path / "work").exists()  # no service started, no folder made
