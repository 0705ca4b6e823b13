"""A two-trial grid on the tiny model through kfp.local: two child runs under one parent, one version registered,
the best by the gate metric, and a summary page that names it. (Two trials show the choice as well as more would;
each trial is a train and an evaluate task more.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from small_configs import small_config_for

from artlora import contracts
from artlora.io import tracking
from artlora.orchestration.local import run_local

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_db")]


def test_a_grid_registers_only_the_best_trial(bucket, tiny_model_dir, sample_folder):
    config = small_config_for(
        bucket, tiny_model_dir, sample_folder, "search.learning_rate=[0.0001, 0.03]", "search.parallel=2"
    )
    outputs = run_local(config, search=True)

    client = MlflowClient(tracking.configure())
    versions = client.search_model_versions(f"name = '{config.model_name}'")
    assert len(versions) == 1 and outputs["version"] == "1" and outputs["changed"] is True
    experiment = client.get_experiment_by_name(config.experiment)
    parents = client.search_runs([experiment.experiment_id], "tags.`artlora.stage` = 'search'")
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2
    assert sorted(float(child.data.params["train.learning_rate"]) for child in children) == [0.0001, 0.03]
    best = min(children, key=lambda child: child.data.metrics["val_loss_lora"])
    assert versions[0].run_id == best.info.run_id
    assert parent.data.tags[contracts.SEARCH_WINNER_TAG] == best.info.run_id
    assert versions[0].tags["source_fingerprint"] and versions[0].tags["pipeline_config_digest"]

    page = Path(outputs["report"]).read_text()
    # The trials' grids, and the loss charts (matplotlib SVG).
    assert page.count("data:image/png;base64,") == 2 and "data:image/svg+xml;base64," in page
    assert f"<code>{best.info.run_id}</code>" in page.split("winner</strong>")[1].split("</tr>")[0]
    names = {child.data.tags["mlflow.runName"] for child in children}
    assert {name.split(":")[0] for name in names} == {"trial 1", "trial 2"}
