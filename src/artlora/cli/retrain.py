"""`artlora retrain-if-changed`: train (here, or by submitting a run) only when the data or the config changed."""

from __future__ import annotations

import argparse

from artlora.cli.common import cluster_arguments, command, config_arguments, connection, experiment_argument

UNCHANGED = 3  # exit status: nothing changed, nothing submitted

RETRAIN_HELP = """List the dataset source (keys, sizes, ETags; no image decoded) and compare it, and the config,
with the lineage tags of the model's registered versions. When a version whose adapter is still stored was trained
on the same listing with the same config, print which one and exit with status 3; otherwise run the pipeline here
(--local) or submit it to Kubeflow Pipelines (--host) with the spec sent inline (no pipeline upload, so the caller
needs rights on experiments and runs only), and exit with status 0. Errors exit with status 2. For a Kubernetes
CronJob or any scheduler; reads ARTLORA_S3_ENDPOINT, the AWS_* keys and MLFLOW_TRACKING_URI from the environment
(with --local and no ARTLORA_S3_ENDPOINT: artlora's local services, as `pipeline run --local`)."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    retrain = command(
        commands,
        "retrain-if-changed",
        "run the pipeline only when the data or config changed",
        description=RETRAIN_HELP,
    )
    config_arguments(retrain)
    cluster_arguments(retrain, local="run the pipeline here with kfp.local")
    experiment_argument(retrain)
    retrain.set_defaults(handler=retrain_if_changed)


def retrain_if_changed(args: argparse.Namespace) -> int:
    from artlora.tasks import changes

    config = args.pipeline_config
    if args.local:
        from artlora.io import local_services

        local_services.ensure()
    checked = changes.check(config)
    if not checked.changed:
        print(checked.describe())
        return UNCHANGED
    if args.local:
        from artlora.orchestration.local import run_local

        outputs = run_local(config)
        done = f"trained {outputs['model_name']} version {outputs['version']} ({outputs['alias']})"
    else:
        from artlora.orchestration import cluster

        submitted = cluster.submit_inline(connection(args), config, args.experiment)
        done = f"submitted run {submitted.run_id}: {submitted.url}"
    print(f"{checked.describe()}; {done}")
    return 0
