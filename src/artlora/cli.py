"""artlora's one entry point: `artlora <command>`. Run `artlora --help`, or `artlora <command> --help`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from artlora import log
from artlora.config import STAGES, ConfigError, load_config
from artlora.io import settings, storage

EXAMPLES = """examples:
  artlora demo                                          the whole pipeline on generated art, CPU only
  artlora sample-data --out data/raw                    500 procedural artworks in 5 styles
  artlora pipeline run --local --config configs/demo.yaml
  artlora train --config configs/sd15.yaml --set train.cache_uri=s3://artlora/cache/index/<key>.json
  artlora pipeline compile                              write pipelines/style_lora.yaml for Kubeflow
  accelerate launch --multi_gpu --num_processes 4 -m artlora.cli train --config ...   one run on 4 GPUs (DDP)

environment:
  ARTLORA_S3_ENDPOINT, ARTLORA_S3_ACCESS_KEY, ARTLORA_S3_SECRET_KEY   your MinIO/S3 (else an embedded one)
  MLFLOW_TRACKING_URI                                   your MLflow server (else SQLite in ARTLORA_WORK_DIR)
  ARTLORA_WORK_DIR                                      local caches and reports (default ./.artlora)
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log.configure(verbose=args.verbose)
    try:
        return args.handler(args) or 0
    except (ConfigError, storage.StorageError, FileNotFoundError, ValueError) as err:
        print(f"artlora {args.command}: error: {err}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="artlora",
        description="Teach Stable Diffusion an artistic style with LoRA: curate, augment, train, evaluate, register.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    for stage in STAGES:
        sub = commands.add_parser(stage, help=f"run the {stage} stage alone", description=_stage_help(stage))
        _config_arguments(sub)
        sub.set_defaults(handler=run_stage)

    sample = commands.add_parser("sample-data", help="write procedural artworks with captions (demo/test data)")
    sample.add_argument("--out", required=True, help="local folder or s3:// prefix")
    sample.add_argument("--count", type=int, default=500, help="number of images (default 500)")
    sample.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    sample.add_argument("--seed", type=int, default=0, help="same seed, same images (default 0)")
    sample.set_defaults(handler=sample_data)

    tiny = commands.add_parser("tiny-model", help="save the tiny in-code Stable Diffusion (tests, demos)")
    tiny.add_argument("--out", required=True, help="local folder or s3:// prefix for the diffusers layout")
    tiny.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    tiny.set_defaults(handler=tiny_model)

    pipeline = commands.add_parser("pipeline", help="compile or run the Kubeflow pipeline")
    actions = pipeline.add_subparsers(dest="action", required=True, metavar="<action>")
    compile_ = actions.add_parser("compile", help="write the pipeline's IR YAML")
    compile_.add_argument("--out", help="output file (default: the packaged pipelines/style_lora.yaml)")
    compile_.set_defaults(handler=pipeline_compile)
    run = actions.add_parser("run", help="run the compiled pipeline", description=RUN_HELP)
    run.add_argument("--local", action="store_true", help="run here with kfp.local (no cluster, no Docker)")
    _config_arguments(run)
    run.set_defaults(handler=pipeline_run)

    services = commands.add_parser("services", help="start an embedded S3 endpoint and keep it up")
    services.set_defaults(handler=serve)

    demo = commands.add_parser("demo", help="generate data and a tiny model, run the whole pipeline locally")
    demo.add_argument("--config", default="configs/demo.yaml", help="demo config (default configs/demo.yaml)")
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    demo.add_argument("--count", type=int, default=500, help="sample images to generate (default 500)")
    demo.set_defaults(handler=run_demo)
    return parser


RUN_HELP = """Run the compiled pipeline (pipelines/style_lora.yaml) with the given config. With --local, the tasks
run as subprocesses here through kfp.local; when ARTLORA_S3_ENDPOINT is unset, an embedded S3 endpoint serves
the run (its objects vanish when the run ends; the evaluation report is copied to ARTLORA_WORK_DIR)."""


def _stage_help(stage: str) -> str:
    return (
        f"Run the {stage} stage with the `{stage}:` section of the config (shared keys at the top apply too). "
        "The stage's inputs from earlier stages (keys ending in _uri, run_id) are passed with --set."
    )


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config file (see configs/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set train.max_steps=200 (repeatable; values are YAML)",
    )


def _print(result: object) -> None:
    if os.environ.get("RANK", "0") != "0":  # `accelerate launch`: every process has the result; one prints it
        return
    data = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result
    print(json.dumps(data, indent=2, default=str))


def run_stage(args: argparse.Namespace) -> int:
    import importlib

    config = load_config(args.config, args.overrides)
    stage = importlib.import_module(f"artlora.stages.{args.command}")
    _print(stage.run(getattr(config, args.command)))
    return 0


def sample_data(args: argparse.Namespace) -> int:
    from artlora.data import sample_data as generator

    if storage.is_s3(args.out):
        with tempfile.TemporaryDirectory() as tmp:
            paths = generator.generate(Path(tmp), count=args.count, size=args.size, seed=args.seed)
            storage.get_storage().upload_dir(tmp, args.out)
    else:
        paths = generator.generate(Path(args.out), count=args.count, size=args.size, seed=args.seed)
    print(f"wrote {len(paths)} images with captions to {args.out}")
    return 0


def tiny_model(args: argparse.Namespace) -> int:
    from artlora.diffusion import tiny

    if storage.is_s3(args.out):
        with tempfile.TemporaryDirectory() as tmp:
            tiny.save_tiny_sd(tmp, seed=args.seed)
            storage.get_storage().upload_dir(tmp, args.out)
    else:
        tiny.save_tiny_sd(args.out, seed=args.seed)
    print(f"wrote the tiny Stable Diffusion (seed {args.seed}) to {args.out}")
    return 0


def pipeline_compile(args: argparse.Namespace) -> int:
    from artlora.pipelines import build

    print(f"compiled {build.compile_pipeline(args.out or build.COMPILED)}")
    return 0


def pipeline_run(args: argparse.Namespace) -> int:
    from artlora.io import services

    if not args.local:
        raise ValueError(
            "only --local runs are built in so far: for a cluster, compile the pipeline "
            "(`artlora pipeline compile`) and upload pipelines/style_lora.yaml to your Kubeflow Pipelines UI"
        )
    config = load_config(args.config, args.overrides)
    with services.ensure_s3():
        outputs = _run_local(config)
    _print(outputs)
    return 0


def _run_local(config) -> dict[str, object]:
    """Run the compiled pipeline with kfp.local and fetch the report; needs S3 to be configured."""
    from artlora.io import tracking
    from artlora.pipelines import build

    work = settings.work_dir()
    os.environ[settings.WORK_DIR] = str(work)  # the tasks are subprocesses: give them the same absolute folder
    started = time.monotonic()
    outputs = build.run_local(config.model_dump_json(), pipeline_root=work / "kfp")
    report = work / "reports" / f"{outputs['model_name']}-v{outputs['version']}.html"
    storage.get_storage().get_file(str(outputs["report_uri"]), report)
    return {
        **outputs,
        "tracking_uri": tracking.configure(),
        "report": str(report),
        "seconds": round(time.monotonic() - started, 1),
    }


def serve(args: argparse.Namespace) -> int:
    from artlora.io import services

    with services.embedded_s3() as url:
        print("embedded S3 endpoint is up; in another shell:")
        for key in (settings.S3_ENDPOINT, settings.S3_ACCESS_KEY, settings.S3_SECRET_KEY):
            print(f"  export {key}={os.environ[key]}")
        print(f"objects live in memory until you stop this (Ctrl-C); endpoint {url}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


def run_demo(args: argparse.Namespace) -> int:
    """Sample data and the tiny model into the object store, then the whole pipeline, locally."""
    from artlora.data import sample_data
    from artlora.diffusion import tiny
    from artlora.io import services

    config = load_config(args.config, args.overrides)
    with services.ensure_s3(), tempfile.TemporaryDirectory() as tmp:
        store = storage.get_storage()
        print(f"writing {args.count} sample artworks to {config.ingest.source}")
        sample_data.generate(Path(tmp) / "raw", count=args.count, seed=config.seed)
        store.upload_dir(Path(tmp) / "raw", config.ingest.source)
        print(f"writing the tiny Stable Diffusion to {config.base_model}")
        tiny.save_tiny_sd(Path(tmp) / "model", seed=config.seed)
        store.upload_dir(Path(tmp) / "model", config.base_model)
        print("running the pipeline: ingest -> augment -> train -> evaluate -> register")
        outputs = _run_local(config)
    print()
    print(f"registered model : {outputs['model_name']} version {outputs['version']} (alias: {outputs['alias']})")
    print(f"dataset          : fingerprint {outputs['dataset_fingerprint']}")
    print(f"MLflow tracking  : {outputs['tracking_uri']}")
    print(f"evaluation report: {outputs['report']}")
    print(f"pipeline time    : {outputs['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
