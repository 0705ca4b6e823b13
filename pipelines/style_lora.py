"""The style-LoRA pipelines, built from a config: one training run, or a grid search that keeps the best trial.

    check -> (changed) ingest -> augment -> train -> evaluate -> register
                                         -> plan -> [train -> evaluate] x trials -> pick best -> register
          -> (unchanged) say which registered version covers the run

The check lists the dataset source (no image decoded) and compares it, and the config, with the registered
versions' lineage tags; when nothing changed, nothing else runs. The typed parameters (dataset source, base
model, model name, steps, learning rate, rank, perceptual weight) and `config_json` default to the config the
pipeline was compiled from; a run's typed parameters win over its `config_json`. Where each task runs (Secrets,
ConfigMaps, resources, GPUs, volumes, retries) comes from the config's `cluster:` section, fixed at compile time,
as is the search's `parallel` (ParallelFor's parallelism).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl.pipeline_channel import PipelineChannel

from artlora.components.augment import augment
from artlora.components.check import check_changes, unchanged
from artlora.components.evaluate import evaluate
from artlora.components.ingest import ingest
from artlora.components.register import register
from artlora.components.search import pick_best, plan_search
from artlora.components.train import train
from artlora.config import PipelineConfig
from artlora.pipelines.platform import place
from artlora.tasks.parameters import KNOBS, knob_values

PIPELINE_NAME = "artlora-style-lora"
SEARCH_PIPELINE_NAME = "artlora-style-lora-search"


class Outputs(NamedTuple):
    changed: bool  # false: nothing ran after the check, and the version below covers the run
    message: str  # the check's one-line verdict
    model_name: str
    version: str
    alias: str
    reason: str  # why the gate chose the alias (when nothing changed: that the aliases stayed)
    report_uri: str  # the evaluation report, or a search's summary page ("" when unchanged)
    dataset_fingerprint: str


class Trained(NamedTuple):
    adapter_uri: PipelineChannel
    run_id: PipelineChannel
    report_uri: PipelineChannel


def _single(config: PipelineConfig, config_json: PipelineChannel, cache_uri: PipelineChannel) -> Trained:
    cluster = config.cluster
    trained = place(train(config_json=config_json, cache_uri=cache_uri), cluster, cluster.train, config.train.gpus)
    run_id = trained.outputs["run_id"]
    evaluated = evaluate(
        config_json=config_json, adapter_uri=trained.outputs["adapter_uri"], cache_uri=cache_uri, run_id=run_id
    )
    place(evaluated, cluster, cluster.evaluate, cluster.evaluate_gpus)
    return Trained(trained.outputs["adapter_uri"], evaluated.outputs["run_id"], evaluated.outputs["report_uri"])


class Picked(NamedTuple):
    run_id: str
    adapter_uri: str
    report_uri: str


def _trials(config: PipelineConfig):
    """Train and evaluate every trial, `search.parallel` at a time, then pick the best.

    A pipeline of its own, called with the trials and the cache as its inputs: inside a ParallelFor, kfp.local
    (2.17) gives the iterations the loop item in place of any input that comes from another task's output,
    while the inputs of the enclosing pipeline reach them intact."""
    cluster = config.cluster

    @dsl.pipeline(name="trials", description="Train and evaluate every trial; pick the best by the gate metric.")
    def trials(config_json: str, trial_configs: list, cache_uri: str, parent_run_id: str) -> Picked:
        with dsl.ParallelFor(trial_configs, parallelism=config.search.parallel, name="trial") as trial:
            trained = train(config_json=trial, cache_uri=cache_uri, parent_run_id=parent_run_id)
            place(trained, cluster, cluster.train, config.train.gpus)
            evaluated = evaluate(
                config_json=trial,
                adapter_uri=trained.outputs["adapter_uri"],
                cache_uri=cache_uri,
                run_id=trained.outputs["run_id"],
            )
            place(evaluated, cluster, cluster.evaluate, cluster.evaluate_gpus)
        run_ids = dsl.Collected(evaluated.outputs["run_id"])
        best = place(
            pick_best(config_json=config_json, parent_run_id=parent_run_id, run_ids=run_ids), cluster, cluster.control
        )
        return Picked(best.outputs["run_id"], best.outputs["adapter_uri"], best.outputs["summary_uri"])

    return trials


def _search(config: PipelineConfig, trials, config_json: PipelineChannel, cache_uri: PipelineChannel) -> Trained:
    planned = place(plan_search(config_json=config_json), config.cluster, config.cluster.control)
    best = trials(
        config_json=config_json,
        trial_configs=planned.outputs["trials"],
        cache_uri=cache_uri,
        parent_run_id=planned.outputs["parent_run_id"],
    )
    return Trained(best.outputs["adapter_uri"], best.outputs["run_id"], best.outputs["report_uri"])


def build(config: PipelineConfig, search: bool = False):
    """The pipeline for `config` (compile it with kfp's compiler); `search` fans out the `search:` section."""
    cluster, defaults = config.cluster, knob_values(config)
    trials = _trials(config) if search else None  # made first: kfp builds one pipeline at a time

    def training(config_json: PipelineChannel, cache_uri: PipelineChannel) -> Trained:
        if trials:
            return _search(config, trials, config_json, cache_uri)
        return _single(config, config_json, cache_uri)

    @dsl.pipeline(
        name=SEARCH_PIPELINE_NAME if search else PIPELINE_NAME,
        description="Grid search of a style LoRA: every trial trained and evaluated, the best registered."
        if search
        else "Curate a style dataset, train a LoRA, evaluate and register it; skipped when nothing changed.",
    )
    def style_lora(
        config_json: str = config.model_dump_json(),
        dataset_source: str = defaults["dataset_source"],
        base_model: str = defaults["base_model"],
        model_name: str = defaults["model_name"],
        max_steps: int = defaults["max_steps"],
        learning_rate: float = defaults["learning_rate"],
        rank: int = defaults["rank"],
        perceptual_weight: float = defaults["perceptual_weight"],
    ) -> Outputs:
        knobs = {name: value for name, value in locals().items() if name in KNOBS}
        checked = check_changes(config_json=config_json, search=search, **knobs)
        place(checked, cluster, cluster.control)
        resolved = checked.outputs["config_json"]
        with dsl.If(checked.outputs["changed"] == True, name="data-or-config-changed"):  # noqa: E712 (a KFP condition)
            curated = place(ingest(config_json=resolved), cluster, cluster.ingest)
            cached = place(
                augment(config_json=resolved, dataset_uri=curated.outputs["dataset_uri"]), cluster, cluster.augment
            )
            trained = training(resolved, cached.output)
            registered = register(
                config_json=resolved,
                adapter_uri=trained.adapter_uri,
                run_id=trained.run_id,
                cache_uri=cached.output,
                source_fingerprint=checked.outputs["source_fingerprint"],
                config_digest=checked.outputs["config_digest"],
            )
            place(registered, cluster, cluster.register)
        with dsl.Else(name="unchanged"):
            skipped = unchanged(
                message=checked.outputs["message"],
                model_name=model_name,
                version=checked.outputs["version"],
                alias=checked.outputs["alias"],
                dataset_fingerprint=checked.outputs["dataset_fingerprint"],
            )
            place(skipped, cluster, cluster.control)
        return Outputs(
            changed=checked.outputs["changed"],
            message=checked.outputs["message"],
            model_name=dsl.OneOf(registered.outputs["model_name"], skipped.outputs["model_name"]),
            version=dsl.OneOf(registered.outputs["version"], skipped.outputs["version"]),
            alias=dsl.OneOf(registered.outputs["alias"], skipped.outputs["alias"]),
            reason=dsl.OneOf(registered.outputs["reason"], skipped.outputs["reason"]),
            report_uri=dsl.OneOf(trained.report_uri, skipped.outputs["report_uri"]),
            dataset_fingerprint=dsl.OneOf(curated.outputs["fingerprint"], skipped.outputs["dataset_fingerprint"]),
        )

    return style_lora
