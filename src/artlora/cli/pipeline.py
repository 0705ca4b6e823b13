"""`artlora pipeline compile | run`: the whole pipeline, compiled for Kubeflow or run here."""

from __future__ import annotations

import argparse
import sys

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
    outputs = run_local(config)
    print_result(outputs)
    print("\n".join(summary(outputs)), file=sys.stderr)  # stdout stays JSON for scripts
    return 0


def summary(outputs: dict) -> list[str]:
    """What a user looks for after a run: the adapter, the MLflow run, how training went, the model version with
    its alias and why, the report, and how to paint with it."""
    steps = outputs["steps"]
    training = f"stopped early after {steps} steps" if outputs["stopped_early"] else f"ran all {steps} steps"
    lines = [
        f"adapter          : {outputs['adapter_uri']}",
        f"MLflow run       : {outputs['run_id']} at {outputs['tracking_uri']}",
    ]
    if "mlflow_ui" in outputs:  # a tracking server
        lines.append(f"MLflow UI        : {outputs['mlflow_ui']} (the run, its images and report, the model)")
    model = f"{outputs['model_name']}/{outputs['version']}"
    return [
        *lines,
        f"training         : {training}; kept the adapter of step {outputs['adapter_step']}",
        f"registered model : {outputs['model_name']} version {outputs['version']} (alias: {outputs['alias']})",
        f"why that alias   : {outputs['reason']}",
        f"dataset          : fingerprint {outputs['dataset_fingerprint']}",
        f"evaluation report: {outputs['report']}",
        f"paint with it    : artlora generate --model models:/{model} --prompt '...' --out images/",
        f"pipeline time    : {outputs['seconds']} s",
    ]
