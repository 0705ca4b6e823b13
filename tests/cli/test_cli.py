"""The CLI in a subprocess, as the container runs it: installed entry point, environment for endpoints."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from artlora.cli import build_parser

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def artlora(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    # The console script is what the container and users call; it lives beside this interpreter.
    script = os.path.join(os.path.dirname(sys.executable), "artlora")
    return subprocess.run([script, *args], capture_output=True, text=True, env=dict(os.environ), check=check)


def test_help_teaches_the_commands():
    out = artlora("--help").stdout
    commands = ("ingest", "augment", "train", "evaluate", "register", "pipeline", "demo", "sample-data", "models")
    for command in (*commands, "generate"):
        assert command in out
    assert "ARTLORA_S3_ENDPOINT" in out and "MLFLOW_TRACKING_URI" in out
    train = artlora("train", "--help").stdout
    assert "--set" in train
    # Every config key of the stage, with its type, default and description, read from the config model.
    assert "train.rank  (integer; default 8)" in train and "LoRA rank" in train
    assert "train.cache_uri  (text or null; from the stage before)" in train
    assert 'train.lr_schedule  ("linear" | "cosine" | "constant"; default "linear")' in train


def test_every_command_and_option_has_a_description():
    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    if not helps.get(name) or not sub.description:
                        missing.append(f"{path} {name}")
                    walk(sub, f"{path} {name}")
            elif not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "artlora")
    assert missing == []


@pytest.mark.slow
def test_ingest_runs_as_the_container_runs_it(small_config, tmp_path, store):
    raw = f"{small_config.storage_root}/raw"
    artlora("sample-data", "--out", raw, "--count", "10", "--size", "64")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(small_config.model_dump(mode="json")))

    result = artlora("ingest", "--config", str(config_path), "--set", f"ingest.source={raw}")
    outcome = json.loads(result.stdout)
    assert outcome["accepted"] == 10 and outcome["rejected"] == 0
    assert store.is_complete(outcome["dataset_uri"])


@pytest.mark.usefixtures("mlflow_db")
def test_no_object_store_is_a_clear_error(small_config, tmp_path):
    """The console script, given no store in its environment (the AWS variables still set), ends in the error
    that says which variable to set, exit 2: an error raised inside a command, where a bad config value (the
    3-second test) is refused before it. `test_cli_errors.py` checks a left-out stage input in-process.

    The stage asks the tracking store first: its SQLite store in ARTLORA_WORK_DIR starts as the migrated copy
    (`mlflow_db`), not made and migrated by the command (seconds of CPU that this error does not need)."""
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(small_config.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if k != "ARTLORA_S3_ENDPOINT"}
    script = os.path.join(os.path.dirname(sys.executable), "artlora")
    result = subprocess.run([script, "ingest", "--config", str(config_path)], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "ARTLORA_S3_ENDPOINT" in result.stderr


@pytest.mark.parametrize("command", [["train"], ["pipeline", "run", "--local"], ["demo"], ["search", "--local"]])
def test_a_bad_config_value_ends_in_one_line_within_3_seconds(command, tmp_path):
    """The config is validated before torch, diffusers, kfp or MLflow are imported (each takes seconds), and
    before any service is started: a typo costs the user no wait. The fastest of up to three tries counts, so
    that a busy machine's passing stall does not decide it (the tries stop at the first within 3 seconds)."""
    config_path = tmp_path / "config.yaml"
    config_path.write_text((CONFIGS / "demo.yaml").read_text())
    times: list[float] = []
    while len(times) < 3 and not any(seconds < 3.0 for seconds in times):
        started = time.perf_counter()
        result = artlora(*command, "--config", str(config_path), "--set", "train.rank=0", check=False)
        times.append(time.perf_counter() - started)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "train.rank" in lines[0], result.stderr
    assert min(times) < 3.0, times
