"""Compile a pipeline from a config to its IR YAML, and run a compiled YAML locally with kfp.local.

`pipelines/style_lora.yaml` is the single-run pipeline compiled from `configs/sd15.yaml` (a test checks that it
equals a fresh compile): the file to upload by hand to a GPU cluster. `artlora pipeline submit` and friends
compile from the config they are given instead.

`python -m artlora.pipelines.build COMPILED_YAML ARGUMENTS_JSON_FILE PIPELINE_ROOT OUTPUTS_FILE` runs a compiled
pipeline as a program of its own: what `artlora pipeline run --local` starts in a process group of its own, so
that stopping it stops every task.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from artlora.config import PipelineConfig

COMPILED = Path(__file__).with_name("style_lora.yaml")
COMPILED_FROM = "configs/sd15.yaml"  # relative to the repository root


def compile_pipeline(config: PipelineConfig, out: str | Path, search: bool = False) -> Path:
    from kfp import compiler

    from artlora.pipelines.style_lora import build

    compiler.Compiler().compile(build(config, search=search), str(out))
    return Path(out)


def run_local(compiled: str | Path, arguments: dict[str, Any], pipeline_root: str | Path) -> dict[str, Any]:
    """Run a compiled pipeline in subprocesses of this Python (no Docker); returns the pipeline's outputs.

    The tasks inherit this process's environment, so they reach the same S3 endpoint and MLflow store. A failed
    task raises RuntimeError, whose message names the task (and the signal, when one killed it).
    """
    from kfp import local
    from kfp.components import load_component_from_file

    from artlora.pipelines import local_terminal

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    pipeline = load_component_from_file(str(compiled))
    with local_terminal.quiet_local_only_warnings(), local_terminal.task_reports() as reports:
        try:
            return dict(pipeline(**arguments).outputs)
        except RuntimeError as err:  # kfp.local's report of a failed task
            raise local_terminal.failure(str(err), reports) from err


def main(argv: list[str] | None = None) -> int:
    """Run the compiled pipeline with the arguments in ARGUMENTS_JSON_FILE; write {"outputs": ...} or
    {"error": ..., "killed": whether a signal killed the task, "own": whether the error is the task's own one line}
    to OUTPUTS_FILE; exit code 0 when it finished."""
    compiled, arguments_file, pipeline_root, outputs_file = argv if argv is not None else sys.argv[1:]
    try:
        outputs = run_local(compiled, json.loads(Path(arguments_file).read_text()), Path(pipeline_root))
    except RuntimeError as err:  # kfp.local's report of a failed task
        from artlora.pipelines.local_terminal import TaskError, TaskKilled

        report = {"error": str(err), "killed": isinstance(err, TaskKilled), "own": isinstance(err, TaskError)}
        Path(outputs_file).write_text(json.dumps(report))
        return 1
    Path(outputs_file).write_text(json.dumps({"outputs": outputs}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
