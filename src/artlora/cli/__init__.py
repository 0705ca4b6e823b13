"""artlora's one entry point: `artlora <command>`. Run `artlora --help`, or `artlora <command> --help`.

Each group of commands lives in its own module here (`stages`, `pipeline`, `services`, `demo`, `models`,
`generate`), which adds its parsers and handlers; this module assembles them and turns every error a user or the
environment can cause into one line, `artlora <command>: error: <what> (<what to do>)`, with exit code 2 (`-v`
adds the traceback).
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback

from artlora import log
from artlora.cli import demo, generate, models, pipeline, retrain, search, services, stages
from artlora.config import load_config
from artlora.errors import ArtloraError, Stopped, environment_fault
from artlora.io import local_services

EXAMPLES = """examples:
  artlora demo                                          the whole pipeline on generated art, CPU only
  eval "$(artlora services up)"                         local S3 store and MLflow server, kept running
  artlora sample-data --out data/raw                    500 procedural artworks in 5 styles
  artlora pipeline run --local --config configs/demo.yaml
  artlora train --help                                  the train stage's config keys, with defaults
  artlora train --config configs/sd15.yaml --set train.cache_uri=s3://artlora/cache/index/<key>.json
  artlora pipeline compile --config configs/sd15.yaml --out pipeline.yaml      the pipeline's IR YAML for Kubeflow
  artlora pipeline submit --host http://localhost:8080 --config configs/sd15.yaml --wait   a run on a cluster
  artlora search --local --config configs/demo.yaml --set search.rank=[4,8]   grid search, best one registered
  artlora retrain-if-changed --config FILE --host URL   submit only when the data or config changed (exit 3: not)
  artlora models list                                   the registered styles: versions, aliases, metrics
  artlora generate --model models:/demo-style@champion --prompt "a woodcut of a tree" --out images/
  accelerate launch --multi_gpu --num_processes 4 -m artlora.cli train --config ...   one run on 4 GPUs (DDP)

environment:
  ARTLORA_S3_ENDPOINT, ARTLORA_S3_ACCESS_KEY, ARTLORA_S3_SECRET_KEY   your MinIO/S3 (else the local services
                                                        when they run; demo and pipeline run --local start them)
  MLFLOW_TRACKING_URI                                   your MLflow server (else the local services' one when they
                                                        run, or SQLite in ARTLORA_WORK_DIR)
  ARTLORA_S3_PORT, ARTLORA_MLFLOW_PORT                  the local services' ports (default 8333, 5000)
  ARTLORA_WORK_DIR                                      local caches and reports (default ./.artlora)
  ARTLORA_S3_CONNECT_TIMEOUT, ARTLORA_S3_READ_TIMEOUT, ARTLORA_S3_RETRIES   how long to wait for the store
                                                        (default 5 s, 10 s, 3: a store that froze is reported
                                                        within about a minute)
  ARTLORA_KFP_TOKEN                                     bearer token for the Kubeflow Pipelines API (--host)
"""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.configure(verbose=args.verbose)
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        if "overrides" in args:  # validated before any command imports torch, diffusers or kfp: a bad value is quick
            args.pipeline_config = load_config(args.config, args.overrides)
        if args.command != "services":  # the services commands manage them; every other command may use them
            local_services.use_running()
        return args.handler(args) or 0
    except (ArtloraError, OSError) as err:
        # Only artlora's own errors, and the machine's refusals (a full disk, no permission), are the user's to
        # fix; anything else is a bug and keeps its traceback.
        fault = err if isinstance(err, ArtloraError) else environment_fault(err)
        if fault is None:
            raise
        if args.verbose:
            traceback.print_exc()
        print(f"artlora {args.command_name}: error: {one_line(fault)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, Stopped) else signal.SIGINT
        print(f"artlora {args.command_name}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(signum: int, frame: object) -> None:
    """SIGTERM (from a scheduler, a pod's deletion or `kill`) stops a command as Ctrl-C does: the blocks that are
    running clean up (an MLflow run is marked killed, embedded services stop) before the process exits."""
    raise Stopped(signum)


def one_line(err: BaseException) -> str:
    """The error's message on one line (a config error lists each bad field under a heading ending in ':'; the
    heading runs on into the first, the rest are joined with '; ')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0]
    for previous, line in zip(lines, lines[1:], strict=False):
        text += (" " if previous.endswith(":") else "; ") + line
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="artlora",
        description="Teach Stable Diffusion an artistic style with LoRA: curate, augment, train, evaluate, register.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks with errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for group in (stages, pipeline, search, retrain, services, demo, models, generate):
        group.add_commands(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
