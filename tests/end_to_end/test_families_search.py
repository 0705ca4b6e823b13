"""The grid search on every model family's tiny base, through kfp.local as `artlora search --local` runs it: one
child run per trial under one parent, and only the best trial by the gate metric registered. (Apart from
test_families_end_to_end.py: kfp.local starts a Python process per task, about a minute per family, and a module
of its own lets pytest-xdist run it beside the other.)"""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from registered import unique_model_name
from small_configs import FAMILIES, family_overrides, small_config_for

from artlora import contracts
from artlora.demo import tiny
from artlora.io import tracking
from artlora.orchestration.local import run_local

pytestmark = pytest.mark.slow
RATES = (0.01, 0.02)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_grid_search_trains_each_trial_and_registers_the_best(
    family, bucket, sample_folder, tmp_path, tracking_server
):
    base = tiny.save_tiny(tmp_path / "model", family)
    name = unique_model_name()
    trials = f"search.learning_rate=[{', '.join(map(str, RATES))}]"
    config = small_config_for(bucket, base, sample_folder, *family_overrides(family), trials, f"model_name={name}")
    outputs = run_local(config, search=True)

    client = MlflowClient(tracking.configure())
    [version] = client.search_model_versions(f"name = '{name}'")
    assert outputs["version"] == version.version
    experiment = client.get_experiment_by_name(config.experiment)
    [parent] = client.search_runs(
        [experiment.experiment_id], f"tags.`{contracts.SEARCH_WINNER_TAG}` = '{version.run_id}'"
    )
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(float(child.data.params["train.learning_rate"]) for child in children) == list(RATES)
    best = min(children, key=lambda child: child.data.metrics["val_loss_lora"])
    assert version.run_id == best.info.run_id
    assert {child.data.params["train.base_model"] for child in children} == {str(base)}  # the family's base
