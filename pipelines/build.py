"""Compile the pipeline to its IR YAML, and run the compiled YAML locally with kfp.local.

`python -m artlora.pipelines.build CONFIG_JSON_FILE PIPELINE_ROOT OUTPUTS_FILE` runs it as a program of its own:
what `artlora pipeline run --local` starts in a process group of its own, so that stopping it stops every task.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COMPILED = Path(__file__).with_name("style_lora.yaml")


def compile_pipeline(out: str | Path = COMPILED) -> Path:
    from kfp import compiler

    from artlora.pipelines.style_lora import style_lora_pipeline

    compiler.Compiler().compile(style_lora_pipeline, str(out))
    return Path(out)


def run_local(config_json: str, pipeline_root: Path, compiled: str | Path = COMPILED) -> dict[str, object]:
    """Run the compiled pipeline in subprocesses of this Python (no Docker); returns the pipeline's outputs.

    The tasks inherit this process's environment, so they reach the same S3 endpoint and MLflow store.
    """
    from kfp import local
    from kfp.components import load_component_from_file

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    pipeline = load_component_from_file(str(compiled))
    task = pipeline(config_json=config_json)
    return dict(task.outputs)


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline with the config in CONFIG_JSON_FILE; write {"outputs": ...} or {"error": ...} to
    OUTPUTS_FILE; exit code 0 when it finished."""
    config_file, pipeline_root, outputs_file = argv if argv is not None else sys.argv[1:]
    try:
        outputs = run_local(Path(config_file).read_text(), Path(pipeline_root))
    except RuntimeError as err:  # kfp.local's report of a failed task
        Path(outputs_file).write_text(json.dumps({"error": str(err)}))
        return 1
    Path(outputs_file).write_text(json.dumps({"outputs": outputs}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
