"""KFP components: a grid search's plan (its trials, under one MLflow parent run) and its pick of the best."""

from typing import NamedTuple

from kfp import dsl

from artlora.components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def plan_search(config_json: str) -> NamedTuple("PlanOutputs", parent_run_id=str, trials=list[str]):
    """Open the search's parent run in MLflow and write each trial's config (the `search:` section's grid, or
    draws of it, put into `train:`).

    Args:
        config_json: the resolved pipeline config (artlora.config.PipelineConfig) as JSON.

    Returns:
        parent_run_id: the MLflow run every trial's run is filed under; trials: each trial's config as JSON.
    """
    from collections import namedtuple

    from artlora import log
    from artlora.config import PipelineConfig
    from artlora.tasks import search

    log.configure()
    config = PipelineConfig.model_validate_json(config_json)
    outputs = namedtuple("PlanOutputs", ["parent_run_id", "trials"])
    return outputs(search.open_parent(config), search.trial_configs(config))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def pick_best(config_json: str, parent_run_id: str, run_ids: list[str]) -> NamedTuple(
    "PickOutputs", run_id=str, adapter_uri=str, metric=float, summary_uri=str
):
    """Pick the best trial by the gate's first metric rule (register.gate) and write the search's summary page.

    Args:
        config_json: the resolved pipeline config (artlora.config.PipelineConfig) as JSON.
        parent_run_id: the search's MLflow run, from plan_search.
        run_ids: every trial's MLflow run, collected from the evaluate tasks.

    Returns:
        run_id and adapter_uri of the best trial, its gate metric, and the s3:// URI of the summary page.
    """
    from collections import namedtuple

    from artlora import log
    from artlora.config import PipelineConfig
    from artlora.tasks import search

    log.configure()
    best = search.pick(PipelineConfig.model_validate_json(config_json), parent_run_id, run_ids)
    outputs = namedtuple("PickOutputs", ["run_id", "adapter_uri", "metric", "summary_uri"])
    return outputs(best.run_id, best.adapter_uri, best.metric, best.summary_uri)
