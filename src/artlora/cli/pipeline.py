"""`artlora pipeline compile | run | submit | schedule | schedules`: the whole pipeline, here or on a cluster."""

from __future__ import annotations

import argparse

from artlora.cli.common import (
    cluster_arguments,
    command,
    config_arguments,
    connection,
    experiment_argument,
    group,
    output_file,
    print_result,
)
from artlora.cli.stages import key_lines
from artlora.config import ClusterConfig
from artlora.errors import writing

COMPILE_HELP = "\n".join(
    [
        "Compile the pipeline (or, with --search, the grid search) from the config. What the config's cluster:",
        "section says is fixed in the YAML: the Secret and ConfigMap every task reads its S3 and MLflow settings",
        "from, each task's CPU, memory, deadline and retries, the GPUs of train (train.gpus) and evaluate with their",
        "node selector and tolerations, the /data/work volume and /dev/shm. The typed parameters (dataset_source,",
        "base_model, model_name, max_steps, learning_rate, rank, perceptual_weight) and config_json default to",
        "the config's values. A key of cluster.<task> left out keeps that task's default.",
        "",
        "config keys (cluster.KEY):",
        *key_lines(ClusterConfig, "cluster"),
    ]
)

RUN_HELP = """Run the pipeline with the given config here: the tasks run as subprocesses through kfp.local. When
ARTLORA_S3_ENDPOINT is unset, they use artlora's local SeaweedFS and MLflow server (`artlora services`), started if
they are not running and left running afterwards. The run starts with the change check: when the source listing and
the config are those of a registered version whose adapter is stored, nothing is trained. The evaluation report is
copied to ARTLORA_WORK_DIR. On a cluster: `artlora pipeline submit`."""

SUBMIT_HELP = """Compile the pipeline from the config, upload it to Kubeflow Pipelines as a version named after the
package version, the code revision and the spec's digest (reused when it is already there), start a run and print
its URL. With --wait, follow the run to its end (exit status 2 unless it succeeds). The tasks read the S3 and
MLflow settings from the Secret and ConfigMap named in the config's cluster: section, never from this command."""

SCHEDULE_HELP = """Upload the pipeline as `submit` does and create a recurring run of it: no catch-up of missed
times, at most one run at a time. Every run starts with the change check, so days without new data cost one small
task. The cron expression has 6 fields, seconds first: "0 0 3 * * *" is 03:00 every day."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    actions = group(commands, "pipeline", "compile the Kubeflow pipeline, run it here, or submit and schedule it")
    compile_ = command(
        actions,
        "compile",
        "write the pipeline's IR YAML, compiled from a config",
        group="pipeline",
        description=COMPILE_HELP,
    )
    config_arguments(compile_)
    compile_.add_argument("--search", action="store_true", help="the grid-search pipeline (the config's search:)")
    compile_.add_argument("--out", metavar="FILE", required=True, help="the YAML file to write")
    compile_.set_defaults(handler=compile_pipeline)

    run = command(actions, "run", "run the whole pipeline here", group="pipeline", description=RUN_HELP)
    run.add_argument("--local", action="store_true", required=True, help="run here with kfp.local (no cluster)")
    config_arguments(run)
    run.set_defaults(handler=run_pipeline)

    submit = command(actions, "submit", "start a run on Kubeflow Pipelines", group="pipeline", description=SUBMIT_HELP)
    _remote_arguments(submit)
    submit.add_argument("--wait", action="store_true", help="follow the run until it ends")
    submit.set_defaults(handler=submit_run)

    schedule = command(actions, "schedule", "run on a schedule", group="pipeline", description=SCHEDULE_HELP)
    _remote_arguments(schedule)
    schedule.add_argument("--cron", required=True, metavar="CRON", help='6 fields, seconds first: "0 0 3 * * *"')
    schedule.set_defaults(handler=schedule_runs)

    schedules = command(actions, "schedules", "list the recurring runs, or delete one", group="pipeline")
    cluster_arguments(schedules)
    schedules.add_argument("--delete", metavar="ID", help="delete the recurring run with this id")
    schedules.set_defaults(handler=list_schedules)


def _remote_arguments(parser: argparse.ArgumentParser) -> None:
    config_arguments(parser)
    cluster_arguments(parser)
    experiment_argument(parser)


def compile_pipeline(args: argparse.Namespace) -> int:
    from artlora.pipelines import build

    config, out = args.pipeline_config, output_file(args.out)
    with writing(out):
        print(f"compiled {build.compile_pipeline(config, out, search=args.search)}")
    return 0


def run_pipeline(args: argparse.Namespace) -> int:
    from artlora.io import local_services
    from artlora.orchestration.local import run_local

    config = args.pipeline_config
    local_services.ensure()
    outputs = run_local(config)
    print_run(outputs)
    return 0


def print_run(outputs: dict) -> None:
    """A local run's result as JSON on stdout, then its summary: what a user reads last, after the stage logs
    (also on stdout); the JSON stays one object a script can parse (the last one that starts a line with `{`)."""
    print_result(outputs)
    print("\n" + "\n".join(summary(outputs)))


def submit_run(args: argparse.Namespace, search: bool = False) -> int:
    from artlora.orchestration import cluster

    config = args.pipeline_config
    where = connection(args)
    submitted = cluster.submit(where, config, args.experiment, search=search)
    print(f"submitted run {submitted.run_id} of pipeline version {submitted.version}: {submitted.url}")
    if args.wait:
        cluster.follow(where, submitted.run_id, say=print)
    return 0


def schedule_runs(args: argparse.Namespace) -> int:
    from artlora.orchestration import cluster

    config = args.pipeline_config
    scheduled = cluster.schedule(connection(args), config, args.cron, args.experiment)
    print(f"scheduled {scheduled.name!r} ({args.cron}) as recurring run {scheduled.schedule_id}")
    print(f"pipeline version {scheduled.version}")
    return 0


def list_schedules(args: argparse.Namespace) -> int:
    from artlora.pipelines.client import Kfp

    kfp = Kfp(connection(args))
    if args.delete:
        kfp.delete_schedule(args.delete)
        print(f"deleted recurring run {args.delete}")
        return 0
    found = kfp.schedules()
    for schedule in found:
        print(
            f"{schedule.schedule_id}  {schedule.cron:<16}  {schedule.mode:<8}  {schedule.created_at}  {schedule.name}"
        )
    print(f"{len(found)} recurring run(s)")
    return 0


def summary(outputs: dict) -> list[str]:
    """What a user looks for after a run: the change check, the adapter, the MLflow run, how training went, the
    model version with its alias and why, the report, and how to paint with it."""
    training = outputs["training"]
    steps = training.get("steps")
    how = f"stopped early after {steps} steps" if training.get("stopped_early") else f"ran all {steps} steps"
    trained = "trained now" if outputs["changed"] else "trained before, reused"
    model = f"{outputs['model_name']}/{outputs['version']}"
    lines = [
        f"change check     : {outputs['message']}",
        f"adapter          : {outputs['adapter_uri']} ({trained})",
        f"MLflow run       : {outputs['run_id']} at {outputs['tracking_uri']}",
    ]
    if "mlflow_ui" in outputs:  # a tracking server
        lines.append(f"MLflow UI        : {outputs['mlflow_ui']} (the run, its images and report, the model)")
    lines.append(f"training         : {how}; kept the adapter of step {training.get('adapter_step')}")
    lines.extend(evaluation_lines(outputs.get("evaluation") or {}))
    return [
        *lines,
        f"registered model : {model.replace('/', ' version ')} (alias: {outputs['alias'] or 'none'})",
        f"why that alias   : {outputs['reason']}",
        f"dataset          : fingerprint {outputs['dataset_fingerprint']}",
        f"evaluation report: {outputs['report'] or '(nothing evaluated: nothing changed)'}",
        *(
            [f"style sheet      : {outputs['style_sheet']} (per style: real, base, LoRA)"]
            if outputs.get("style_sheet")
            else []
        ),
        f"paint with it    : artlora generate --model models:/{model} --prompt '...' --out images/",
        f"pipeline time    : {outputs['seconds']} s",
    ]


def evaluation_lines(evaluation: dict) -> list[str]:
    """The evaluation's key figures: held-out loss, styles told apart, style movement, and the caption gap (logged
    only when it is finite: an older cache has no styles to swap captions between)."""
    if "val_loss_lora" not in evaluation:
        return []
    loss = (
        f"evaluation       : held-out loss {evaluation['val_loss_base']:.4f} (base) -> "
        f"{evaluation['val_loss_lora']:.4f} (LoRA)"
    )
    if "style_hits_lora" in evaluation:
        loss += (
            f"; styles painted closest to their own: base {evaluation['style_hits_base']:.0f}, "
            f"LoRA {evaluation['style_hits_lora']:.0f}"
        )
    if "caption_gap_lora" in evaluation:
        other = "the empty caption" if len(_per_style(evaluation, "val_loss_lora/")) == 1 else "another style's caption"
        gap = (
            f"caption gap      : {evaluation.get('caption_gap_base', float('nan')):.4f} (base) -> "
            f"{evaluation['caption_gap_lora']:.4f} (LoRA): held-out loss with {other} minus "
            "with its own (larger: the model reads the style from the caption)"
        )
    else:
        gap = "caption gap      : n/a (the cache names no styles: make it again to measure the gap)"
    return [loss, *movement_lines(evaluation), gap]


def _per_style(evaluation: dict, prefix: str) -> dict[str, float]:
    return {key.removeprefix(prefix): value for key, value in evaluation.items() if key.startswith(prefix)}


def movement_lines(evaluation: dict) -> list[str]:
    """Per style, the LoRA's style distance over the base's, and the largest (none when not measured)."""
    per_style = _per_style(evaluation, "style_movement/")
    if not per_style:
        return []
    styles = ", ".join(f"{style} {value:.3f}" for style, value in sorted(per_style.items()))
    worst = evaluation.get("style_movement")
    lines = [
        f"style movement   : {'n/a' if worst is None else f'{worst:.3f}'} at most (LoRA / base distance to a style's "
        f"held-out images, below 1 = moved toward it): {styles}"
    ]
    toward_content = _per_style(evaluation, "other_content_movement/")
    if toward_content:
        others = ", ".join(f"{style} {value:.3f}" for style, value in sorted(toward_content.items()))
        lines.append(
            "other content    : LoRA / base distance from a style's images to the base's images of the content "
            f"prompts (at or above its style movement: the style's own, not a move toward anything): {others}"
        )
    return lines
