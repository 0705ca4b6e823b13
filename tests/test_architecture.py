"""The layout's rules, checked over the import graph of `src/artlora` (every import, also inside functions).

- No stage imports another stage: what two stages share lives in `data/` or `diffusion/`.
- The shared layers (`io/`, `data/`, `diffusion/`, `config/`) import no stage.
- Only `io/` imports the object-store client or MLflow.
- Only the pipeline-building code (`components/`, `pipelines/`) imports kfp.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "artlora"
SHARED_LAYERS = ("io", "data", "diffusion", "config")
IO_ONLY = ("minio", "mlflow")
PIPELINE_BUILDING = ("components", "pipelines")


def modules() -> dict[str, set[str]]:
    """Each module's dotted name -> the dotted names it imports (absolute, as written)."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):  # rglob follows the components/ and pipelines/ links
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("artlora", *parts)).removesuffix(".__init__")
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.update([node.module, *(f"{node.module}.{alias.name}" for alias in node.names)])
        graph[name] = imported
    return graph


GRAPH = modules()


def area(module: str) -> tuple[str, ...]:
    """`artlora.stages.train.trainer` -> ("stages", "train"); `artlora.io.storage` -> ("io",)."""
    parts = module.split(".")[1:]
    return tuple(parts[:2]) if parts[:1] == ["stages"] else tuple(parts[:1]) or ("",)


def offenders(select, forbidden) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, imports in GRAPH.items()
        if select(module)
        for target in imports
        if forbidden(module, target)
    )


def test_the_graph_covers_every_stage_and_layer():
    areas = {area(module) for module in GRAPH}
    stages = {("stages", name) for name in ("ingest", "augment", "train", "evaluate", "register")}
    assert stages | {(layer,) for layer in SHARED_LAYERS} <= areas
    assert any("stages" in target for imports in GRAPH.values() for target in imports)


def test_no_stage_imports_another_stage():
    def other_stage(module: str, target: str) -> bool:
        return target.startswith("artlora.stages.") and area(target)[:2] != area(module)[:2]

    assert offenders(lambda m: area(m)[:1] == ("stages",) and len(area(m)) == 2, other_stage) == []


@pytest.mark.parametrize("layer", SHARED_LAYERS)
def test_shared_layers_import_no_stage(layer):
    assert offenders(lambda m: area(m) == (layer,), lambda m, t: t.startswith("artlora.stages")) == []


def test_only_io_talks_to_storage_and_tracking():
    def external(module: str, target: str) -> bool:
        return target.split(".")[0] in IO_ONLY

    assert offenders(lambda m: area(m) != ("io",), external) == []


def test_only_the_pipeline_code_imports_kfp():
    assert offenders(lambda m: area(m)[0] not in PIPELINE_BUILDING, lambda m, t: t.split(".")[0] == "kfp") == []
