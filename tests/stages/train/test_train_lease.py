"""Two identical training runs started at once (issue 21): before the run folder's lease both resumed from the same
step and wrote the same checkpoints and adapter, each under an MLflow run of its own. Now one trains while the
other waits, saying who holds the folder, and then returns the adapter the first one published."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing

import mlflow
import pytest
import yaml

from artlora import contracts
from artlora.config import with_inputs
from artlora.io import lease, tracking
from artlora.stages.train import checkpoints
from artlora.stages.train import run as train

pytestmark = pytest.mark.usefixtures("mlflow_db")


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def train_when_released(barrier, config) -> tuple[dict, list[str]]:
    """Train once both processes are ready; the result, and what the run logged."""
    collect = Collect()
    logger = logging.getLogger("artlora")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(collect)
    try:
        barrier.wait(timeout=300)
        result = train.run(config)
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    return dataclasses.asdict(result), collect.messages


def train_in_a_process(barrier, config, results) -> None:
    """In a process of its own (the test's environment inherited)."""
    results.put(train_when_released(barrier, config))


@pytest.mark.slow
def test_two_identical_runs_at_once_train_once(small_config, latent_cache, store):
    config = with_inputs(small_config.train, cache_uri=latent_cache)
    # Two processes: this one, and one started fresh (one torch import, not two in two new processes).
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    other = context.Process(target=train_in_a_process, args=(barrier, config, results))
    other.start()
    try:
        first, first_log = train_when_released(barrier, config)
        second, second_log = results.get(timeout=600)
        other.join(timeout=60)
    finally:
        other.kill()

    tracking.configure()
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_experiment_by_name(config.experiment)
    trained = client.search_runs([experiment.experiment_id], "tags.`artlora.stage` = 'train'")
    assert [run.info.run_id for run in trained] == [first["run_id"]], "one MLflow run trained"
    steps = [metric.step for metric in client.get_metric_history(first["run_id"], "loss")]
    assert steps == [1, 2, 3, 4], "each step trained once, by one run"
    assert first == second, "both return the one adapter the first published"
    root = train.run_uri(config)
    assert checkpoints.complete_steps(store, root) == [2]
    assert not store.exists(contracts.lease_object(root)), "released at the end"

    waited = [log for log in (first_log, second_log) if any(" is held by " in line for line in log)]
    assert len(waited) == 1, "exactly one run found the other training and waited"
    assert any("finished by an identical run" in line for line in waited[0])


def test_a_run_that_waits_too_long_ends_in_one_line_naming_the_holder(
    small_config, latent_cache, store, tmp_path, monkeypatch, capsys
):
    from artlora import cli

    config = with_inputs(small_config.train, cache_uri=latent_cache)
    monkeypatch.setattr(lease, "WAIT_S", 1.0)
    monkeypatch.setattr(lease, "POLL_S", 0.1)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(small_config.model_dump(mode="json")))
    argv = ["train", "--config", str(config_path), "--set", f"train.cache_uri={latent_cache}"]
    with lease.Lease(store, contracts.lease_object(train.run_uri(config))) as other:  # an identical run, alive
        assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("artlora train: error: ") and other.owner in lines[-1], lines[-1]
    assert "after waiting 1 s" in lines[-1] and "let it finish" in lines[-1]
    assert checkpoints.complete_steps(store, train.run_uri(config)) == [], "it wrote nothing"
