"""The grid search's bookkeeping: the trials a `search:` section asks for, the parent run they hang under in
MLflow, and the pick of the best by the register gate's metric (lower is better), with a summary page.

The search pipeline (pipelines/style_lora.py) opens the parent run and writes out the trials' configs in one task,
trains and evaluates every trial, then picks the best in another.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from artlora import contracts
from artlora.config import PipelineConfig, with_inputs
from artlora.errors import ArtloraError
from artlora.io import runs, storage

if TYPE_CHECKING:
    from artlora.tasks.search_report import TrialReport

log = logging.getLogger(__name__)


class SearchError(ArtloraError):
    """A trial of the search did not produce what picking the best needs."""


def trials(config: PipelineConfig) -> list[dict[str, Any]]:
    """Each trial's train settings that differ from `train:`: every combination, or `draws` of them."""
    space = config.search.space()
    combinations = [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]
    draws = config.search.draws  # set exactly when the strategy is random (SearchConfig)
    if draws is not None and draws < len(combinations):
        chosen = sorted(random.Random(config.seed).sample(range(len(combinations)), draws))
        combinations = [combinations[index] for index in chosen]
    return combinations


def trial_config(config: PipelineConfig, settings: dict[str, Any]) -> PipelineConfig:
    return config.model_copy(update={"train": with_inputs(config.train, **settings)})


def label(settings: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in settings.items()) or "train: as configured"


def trial_configs(config: PipelineConfig) -> list[str]:
    """Each trial's whole config, as JSON."""
    return [trial_config(config, settings).model_dump_json() for settings in trials(config)]


def open_parent(config: PipelineConfig) -> str:
    """Open the run that the search's trials are filed under in MLflow; its id."""
    count = len(trials(config))
    params = {
        "search.strategy": config.search.strategy,
        "search.trials": str(count),
        "search.parallel": str(config.search.parallel),
        **{f"search.{name}": json.dumps(values) for name, values in config.search.space().items()},
    }
    parent = runs.start_parent_run(config.experiment, config.storage_root, f"search {config.model_name}", params)
    runs.set_run_tags(parent, {contracts.STAGE_TAG: "search"})
    log.info("search run %s: %d trials, %d at once", parent, count, config.search.parallel)
    return parent


def file_trial(run_id: str, parent_run_id: str) -> None:
    """Show a trial's training run as a child of the search's run in MLflow."""
    runs.set_run_tags(run_id, {contracts.PARENT_RUN_TAG: parent_run_id})


@dataclass(frozen=True)
class Winner:
    run_id: str
    adapter_uri: str
    metric: float
    summary_uri: str


def _trial(config: PipelineConfig, run_id: str, number: int) -> TrialReport:
    from artlora.tasks.search_report import TrialReport  # see `pick`

    run = runs.get_run(run_id)
    metric = config.register.ranking_rule.metric_name
    if metric not in run.data.metrics or contracts.ADAPTER_URI_TAG not in run.data.tags:
        raise SearchError(
            f"trial run {run_id} has no {metric!r} metric or no adapter (the first metric rule of register.gate "
            "names it; check the trial's train and evaluate tasks)"
        )
    # A setting left out of the logged config at its default (the settings added later) shows its default.
    defaults = {name: str(field.default) for name, field in type(config.train).model_fields.items()}
    settings = {name: run.data.params.get(f"train.{name}", defaults[name]) for name in config.search.space()}
    return TrialReport(
        number=number,
        run_id=run_id,
        label=label(settings),
        adapter_uri=run.data.tags[contracts.ADAPTER_URI_TAG],
        metrics=dict(run.data.metrics),
        curves={key: runs.metric_history(run_id, key) for key in ("loss", "val_loss")},
        grid_png=runs.run_artifact_bytes(run_id, contracts.GRID_ARTIFACT),
    )


def pick(config: PipelineConfig, parent_run_id: str, run_ids: list[str]) -> Winner:
    """The best trial by the gate's first metric rule; every trial is named in MLflow and compared on the summary page,
    which goes to the parent run (`search/summary.html`) and to the object store."""
    # The summary page's code (jinja2, matplotlib) is loaded here, not with the module: the plan and every trial's
    # train task import this module too, and neither renders a page.
    from artlora.tasks.search_report import summary_html

    rule = config.register.ranking_rule
    metric = rule.metric_name
    reports = [_trial(config, run_id, number) for number, run_id in enumerate(run_ids, start=1)]
    best = (min if rule.direction == "lower" else max)(reports, key=lambda report: report.metrics[metric])
    for report in reports:
        runs.set_run_tags(report.run_id, {contracts.RUN_NAME_TAG: f"trial {report.number}: {report.label}"})
    page = summary_html(config, reports, best).encode()
    summary_uri = storage.join(config.storage_root, "searches", parent_run_id, "summary.html")
    storage.get_storage().put_bytes(summary_uri, page, content_type="text/html")
    runs.log_run_bytes(parent_run_id, page, "search/summary.html")
    runs.log_run_metrics(parent_run_id, {f"best_{metric}": best.metrics[metric]})
    runs.set_run_tags(parent_run_id, {contracts.SEARCH_WINNER_TAG: best.run_id})
    runs.finish_run(parent_run_id)
    log.info(
        "best of %d trials: trial %d (%s), %s %.6f", len(reports), best.number, best.label, metric, best.metrics[metric]
    )
    return Winner(best.run_id, best.adapter_uri, best.metrics[metric], summary_uri)
