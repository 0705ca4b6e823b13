"""KFP components: the run's config and the change check that starts every pipeline, and its "unchanged" end."""

from typing import NamedTuple

from kfp import dsl

from artlora.components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def check_changes(
    config_json: str,
    dataset_source: str,
    base_model: str,
    model_name: str,
    max_steps: int,
    learning_rate: float,
    rank: int,
    perceptual_weight: float,
    search: bool,
) -> NamedTuple(
    "CheckOutputs",
    config_json=str,
    changed=bool,
    source_fingerprint=str,
    config_digest=str,
    message=str,
    version=str,
    alias=str,
    dataset_fingerprint=str,
):
    """Resolve the run's config, list the source (no image decoded) and compare it with the registered versions.

    Args:
        config_json: the pipeline config (artlora.config.PipelineConfig) as JSON.
        dataset_source, base_model, model_name, max_steps, learning_rate, rank, perceptual_weight: the typed
            parameters; their values replace config_json's.
        search: whether the run is a grid search (its config digest then covers the `search:` section).

    Returns:
        config_json: the resolved config every later task gets; changed: whether to train; the source
        fingerprint and config digest that register records; a one-line message; and the version that
        covers an unchanged run (version, alias, dataset_fingerprint; empty when changed).
    """
    from collections import namedtuple

    from artlora import log
    from artlora.tasks import changes, parameters

    log.configure()
    knobs = {name: value for name, value in locals().items() if name in parameters.KNOBS}
    config = parameters.resolve(config_json, **knobs)
    result = changes.check(config, search=search)
    covering = result.covering or changes.Covering(config.model_name, "", "", "")
    names = ["config_json", "changed", "source_fingerprint", "config_digest", "message"]
    outputs = namedtuple("CheckOutputs", [*names, "version", "alias", "dataset_fingerprint"])
    return outputs(
        config.model_dump_json(),
        result.changed,
        result.source_fingerprint,
        result.config_digest,
        result.describe(),
        covering.version,
        covering.alias,
        covering.dataset_fingerprint,
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def unchanged(message: str, model_name: str, version: str, alias: str, dataset_fingerprint: str) -> NamedTuple(
    "UnchangedOutputs", model_name=str, version=str, alias=str, reason=str, report_uri=str, dataset_fingerprint=str
):
    """Nothing changed since a registered version was trained: say which version covers this run.

    Args:
        message: the check's one-line verdict.
        model_name, version, alias, dataset_fingerprint: the covering version, from the check.

    Returns:
        the covering version, as the pipeline's outputs (report_uri is empty: nothing was evaluated).
    """
    from collections import namedtuple

    print(f"{message}: nothing trained, nothing registered")
    names = ["model_name", "version", "alias", "reason", "report_uri", "dataset_fingerprint"]
    reason = "nothing changed, so nothing was registered: the aliases stay as they were"
    return namedtuple("UnchangedOutputs", names)(model_name, version, alias, reason, "", dataset_fingerprint)
