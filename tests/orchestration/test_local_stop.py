"""Ctrl-C (SIGINT) or SIGTERM on `artlora pipeline run --local` or `artlora demo` stops every task it started: a
stopped train task is not retried by kfp.local, nothing of the run is left running, and the command exits
128 + signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml

pytestmark = pytest.mark.slow


def running_tasks(root: psutil.Process, name: str | None = None) -> list[psutil.Process]:
    """The running tasks under `root` (kfp.local starts each with `--function_to_execute <name>`), those of one
    component if `name` is given."""
    found = []
    for process in root.children(recursive=True):
        try:
            command = process.cmdline()
        except psutil.Error:
            continue
        if "--function_to_execute" in command and name in (None, command[command.index("--function_to_execute") + 1]):
            found.append(process)
    return found


def of_this_run(work_dir) -> list[psutil.Process]:
    """Every live process whose command line names this test's work folder (kfp.local's tasks name their
    pipeline root in it), wherever it was re-parented to."""
    alive = []
    for process in psutil.process_iter(["cmdline", "status"]):
        command = " ".join(process.info["cmdline"] or [])
        if str(work_dir) in command and process.info["status"] != psutil.STATUS_ZOMBIE:
            alive.append(process)
    return alive


@pytest.mark.parametrize(
    ("command", "sig"),
    [(["pipeline", "run", "--local"], signal.SIGINT), (["demo", "--count", "20"], signal.SIGTERM)],
    ids=["pipeline-run-sigint", "demo-sigterm"],
)
def test_a_stop_signal_ends_every_task(small_config, bucket, store, tmp_path, work_dir, s3_endpoint, command, sig):
    """The pipeline is stopped while it trains (a retried train task would show); the demo, which runs the same
    pipeline after making its data, as soon as its first task runs."""
    overrides = {"train": {**small_config.train.model_dump(mode="json"), "max_steps": 2000, "checkpoint_every": 1}}
    if command[0] == "demo":  # the demo writes its sample data and model to the config's s3:// places
        overrides |= {"base_model": f"{bucket}/models/tiny"}
        overrides["ingest"] = {**small_config.ingest.model_dump(mode="json"), "source": f"{bucket}/raw"}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**small_config.model_dump(mode="json"), **overrides}))
    argv = [sys.executable, "-m", "artlora.cli", *command, "--config", str(config)]
    cli = subprocess.Popen(argv, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        parent = psutil.Process(cli.pid)
        deadline = time.monotonic() + 300
        awaited = "train" if command[0] == "pipeline" else None
        while not running_tasks(parent, awaited):
            assert cli.poll() is None, f"the run ended before its task ran: {cli.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, f"no {awaited or ''} task within 300 s"
            time.sleep(0.2)
        task = running_tasks(parent, awaited)[0]
        runs = store.list(f"{bucket}/runs")
        while awaited and next(runs, None) is None:  # the task is training: its first checkpoint is written
            assert time.monotonic() < deadline, "the train task wrote no checkpoint within 300 s"
            time.sleep(0.2)
            runs = store.list(f"{bucket}/runs")
        started = time.monotonic()
        cli.send_signal(sig)
        stderr = cli.communicate(timeout=60)[1]
    finally:
        cli.kill()
    assert time.monotonic() - started < 30, "stopping took longer than the grace period"
    assert cli.returncode == 128 + sig, stderr[-3000:]
    assert f"interrupted ({signal.Signals(sig).name})" in stderr
    assert not task.is_running() or task.status() == psutil.STATUS_ZOMBIE
    time.sleep(3)  # a retry would start within kfp.local's back-off; none may
    assert of_this_run(work_dir) == [], "processes of the run outlived it"
