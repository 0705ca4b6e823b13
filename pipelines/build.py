"""Compile the pipeline to its IR YAML, and run the compiled YAML locally with kfp.local."""

from __future__ import annotations

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
