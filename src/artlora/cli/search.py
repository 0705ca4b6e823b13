"""`artlora search`: the grid search of the config's `search:` section, here or on a cluster."""

from __future__ import annotations

import argparse

from artlora.cli.common import cluster_arguments, command, config_arguments, experiment_argument
from artlora.cli.pipeline import print_run
from artlora.cli.stages import key_lines
from artlora.config import SearchConfig

SEARCH_HELP = """Train and evaluate one trial per combination of the `search:` section's values (or `draws` of
them), `search.parallel` at a time, after one ingest and one augment; register only the best trial by the first
metric rule of register.gate (the lowest val_loss_lora by default). In MLflow the trials are child runs of one
parent run, whose search/summary.html compares them (settings, metrics, loss curves, image grids) and names the winner.

  search:
    learning_rate: [1.0e-4, 3.0e-4]
    rank: [8, 16]
    parallel: 2

Like the pipeline, a search on a source and config some registered version was trained on trains nothing.
--local runs it here through kfp.local; --host submits it to Kubeflow Pipelines.

config keys (search.KEY):
""" + "\n".join(key_lines(SearchConfig, "search"))


def add_commands(commands: argparse._SubParsersAction) -> None:
    search = command(
        commands, "search", "grid search over training settings; register the best", description=SEARCH_HELP
    )
    config_arguments(search)
    cluster_arguments(search, local="run here with kfp.local")
    experiment_argument(search)
    search.add_argument("--wait", action="store_true", help="with --host: follow the run until it ends")
    search.set_defaults(handler=run_search)


def run_search(args: argparse.Namespace) -> int:
    config = args.pipeline_config
    if args.local:
        from artlora.io import local_services
        from artlora.orchestration.local import run_local

        local_services.ensure()
        outputs = run_local(config, search=True)
        print_run(outputs)
        return 0
    from artlora.cli.pipeline import submit_run

    return submit_run(args, search=True)
