"""`artlora pipeline compile | run`: the whole pipeline, compiled for Kubeflow or run here."""

from __future__ import annotations

import argparse

from artlora.cli.common import command, config_arguments, group, print_result
from artlora.config import load_config

RUN_HELP = """Run the compiled pipeline (pipelines/style_lora.yaml) with the given config. With --local, the tasks
run as subprocesses here through kfp.local; when ARTLORA_S3_ENDPOINT is unset, they use artlora's local SeaweedFS
and MLflow server (`artlora services`), started if they are not running and left running afterwards. The
evaluation report is also copied to ARTLORA_WORK_DIR."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    actions = group(commands, "pipeline", "compile the Kubeflow pipeline, or run it here")
    compile_ = command(actions, "compile", "write the pipeline's IR YAML", group="pipeline")
    compile_.add_argument("--out", metavar="FILE", help="output file (default: the packaged pipelines/style_lora.yaml)")
    compile_.set_defaults(handler=compile_pipeline)
    run = command(actions, "run", "run the compiled pipeline", group="pipeline", description=RUN_HELP)
    run.add_argument("--local", action="store_true", help="run here with kfp.local (no cluster, no Docker)")
    config_arguments(run)
    run.set_defaults(handler=run_pipeline)


def compile_pipeline(args: argparse.Namespace) -> int:
    from artlora.pipelines import build

    print(f"compiled {build.compile_pipeline(args.out or build.COMPILED)}")
    return 0


def run_pipeline(args: argparse.Namespace) -> int:
    from artlora.io import local_services
    from artlora.orchestration.local import run_local

    if not args.local:
        raise ValueError(
            "only --local runs are built in so far (for a cluster, compile the pipeline with "
            "`artlora pipeline compile` and upload pipelines/style_lora.yaml to your Kubeflow Pipelines UI)"
        )
    config = load_config(args.config, args.overrides)
    local_services.ensure()
    print_result(run_local(config))
    return 0
