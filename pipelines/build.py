"""Compile a pipeline from a config to its IR YAML, and run a compiled YAML locally with kfp.local.

`pipelines/style_lora.yaml` is the single-run pipeline compiled from `configs/sd15.yaml` (a test checks that it
equals a fresh compile): the file to upload by hand to a GPU cluster. `artlora pipeline submit` and friends
compile from the config they are given instead.
"""

from __future__ import annotations

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

    The tasks inherit this process's environment, so they reach the same S3 endpoint and MLflow store.
    """
    from kfp import local
    from kfp.components import load_component_from_file

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    pipeline = load_component_from_file(str(compiled))
    return dict(pipeline(**arguments).outputs)
