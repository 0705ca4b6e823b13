"""The layout's rules, checked over the import graph of `src/artlora` (every import, also inside functions).

- No package cycle: `components/` and `pipelines/` are linked into the package (they install as
  `artlora.components` and `artlora.pipelines`), so their imports count like any other; what runs inside the
  pipeline's tasks (`tasks/`) sits below them and what drives whole pipelines (`orchestration/`) above.
- No stage imports another stage: what two stages share lives in `data/` or `diffusion/`.
- The shared layers (`io/`, `data/`, `diffusion/`, `config/`) import no stage.
- Only `io/` imports the object-store client or MLflow.
- Only the pipeline-building code (`components/`, `pipelines/`) imports kfp.
- A name two stages agree on (a run tag, a metadata key) is written once: each `artlora.` string that is not a
  module's name appears once in `src/`.
- Importing the trainer loads neither the object-store client nor MLflow; the light tasks load no torch stack.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "artlora"
SHARED_LAYERS = ("io", "data", "diffusion", "config")
IO_ONLY = ("minio", "mlflow")
PIPELINE_BUILDING = ("components", "pipelines")


def sources() -> dict[str, tuple[Path, ast.Module]]:
    """Each module's dotted name -> its file and syntax tree. The walk follows the components/ and pipelines/
    links, so those modules get the names they are imported by."""
    found = {}
    files = [Path(folder, name) for folder, _, names in os.walk(PACKAGE, followlinks=True) for name in names]
    for path in sorted(file for file in files if file.suffix == ".py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("artlora", *parts)).removesuffix(".__init__")
        found[name] = (path, ast.parse(path.read_text(), str(path)))
    return found


def imports_of(tree: ast.Module) -> set[str]:
    """The dotted names a module imports (absolute, as written; `from a import b` gives both a and a.b)."""
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.update([node.module, *(f"{node.module}.{alias.name}" for alias in node.names)])
    return imported


SOURCES = sources()
GRAPH = {name: imports_of(tree) for name, (_, tree) in SOURCES.items()}


def area(module: str) -> tuple[str, ...]:
    """`artlora.stages.train.trainer` -> ("stages", "train"); `artlora.io.storage` -> ("io",)."""
    parts = module.split(".")[1:]
    return tuple(parts[:2]) if parts[:1] == ["stages"] else tuple(parts[:1]) or ("",)


def package_graph(graph: dict[str, set[str]]) -> dict[tuple[str, ...], set[tuple[str, ...]]]:
    """Which package imports which (each stage its own package), from the module graph; artlora's own only."""
    packages: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for module, targets in graph.items():
        edges = packages.setdefault(area(module), set())
        for target in targets:
            if target.startswith("artlora.") and target in graph and area(target) != area(module):
                edges.add(area(target))
    return packages


def cycles(packages: dict[tuple[str, ...], set[tuple[str, ...]]]) -> list[list[str]]:
    """Every cycle between packages, as found by a depth-first search (each once, from its first package)."""
    found, state = [], {}  # state: 1 = on the current path, 2 = done

    def visit(node: tuple[str, ...], path: list[tuple[str, ...]]) -> None:
        state[node] = 1
        for target in sorted(packages.get(node, ())):
            if state.get(target) == 1:
                loop = path[path.index(target) :] + [target]
                found.append([".".join(part) for part in loop])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(packages):
        if node not in state:
            visit(node, [node])
    return found


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
    layers = {(layer,) for layer in (*SHARED_LAYERS, *PIPELINE_BUILDING, "tasks", "orchestration")}
    assert stages | layers <= areas
    assert any("stages" in target for imports in GRAPH.values() for target in imports)


def test_no_cycle_between_packages():
    assert cycles(package_graph(GRAPH)) == []


def test_a_planted_cycle_is_found():
    """The check sees through the symlinked names: a task importing a component closes a loop."""
    planted = {**GRAPH, "artlora.tasks.planted": {"artlora.components.train"}}
    found = cycles(package_graph(planted))
    assert any({"tasks", "components"} <= set(loop) for loop in found), found


def test_tasks_sit_below_the_pipeline_code_and_orchestration_above():
    def upward(module: str, target: str) -> bool:
        return area(target)[0] in (*PIPELINE_BUILDING, "orchestration", "cli")

    assert offenders(lambda m: area(m) == ("tasks",), upward) == []


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


# -- names two stages agree on ------------------------------------------------------------------------------

TAG_LIKE = re.compile(r"^artlora\.[a-z_][a-z0-9_.]*$")


def tag_strings(trees: dict[str, ast.Module]) -> Counter:
    """How often each `artlora.`-prefixed string literal appears, module names (`-m artlora.cli`, a pyfunc
    loader, a logger) left out: a tag or key written twice is two places that must agree."""
    counts: Counter = Counter()
    for tree in trees.values():
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and TAG_LIKE.match(text) and text not in GRAPH:
                counts[text] += 1
    return counts


def test_each_tag_string_is_written_once():
    trees = {name: tree for name, (_, tree) in SOURCES.items()}
    assert {text: n for text, n in tag_strings(trees).items() if n > 1} == {}


def test_a_planted_second_tag_string_is_found():
    planted = ast.parse('runs.set_tags({"artlora.dataset_fingerprint": fingerprint})')
    trees = {name: tree for name, (_, tree) in SOURCES.items()} | {"artlora.stages.planted": planted}
    assert tag_strings(trees)["artlora.dataset_fingerprint"] == 2


# -- light imports ------------------------------------------------------------------------------------------


def test_importing_the_trainer_loads_neither_the_store_client_nor_mlflow():
    """The benchmarks time the trainer on a GPU machine that has neither; a stage package's __init__ is light."""
    code = (
        "import sys, artlora.stages.train.trainer; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'minio', 'mlflow', 'kfp'}))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


# Each pipeline task is a fresh process that pays for its imports (torch, diffusers and transformers: seconds of
# CPU). What a module must not load, in import order: what one step forbids, the steps before it forbid too.
LIGHT = [
    # The painting parameters that registering records with a version (MLflow imports the package, too, before the
    # pyfunc loader): the painter and its torch stack load only to paint.
    ("artlora.generate.settings", ("torch", "diffusers", "peft")),
    ("artlora.orchestration.local", ("torch", "diffusers")),  # `pipeline run --local`, before any task runs
    ("artlora.tasks.search", ("torch", "matplotlib")),  # the search's plan; every trial's train task imports it
    ("artlora.stages.register.run", ("diffusers", "peft")),  # register, unless a champion is measured again
]


def test_the_light_tasks_load_no_heavy_library():
    code = (
        "import importlib, json, sys\n"
        f"for module, forbidden in {LIGHT!r}:\n"
        "    importlib.import_module(module)\n"
        "    print(json.dumps([module, sorted(set(forbidden) & {m.split('.')[0] for m in sys.modules})]))\n"
    )
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = [json.loads(line) for line in printed.splitlines()]
    assert loaded == [[module, []] for module, _ in LIGHT]


# -- model families ---------------------------------------------------------------------------------------

# The classes that make a base what it is: its denoiser, text encoders and pipelines.
ARCHITECTURE_CLASS = re.compile(
    r"^(UNet2DConditionModel|\w*Transformer2DModel|CLIPTextModel\w*|T5EncoderModel|StableDiffusion\w*Pipeline|"
    r"Flux\w*Pipeline)$"
)
# What only a family may compare against: the family names, and the configs and properties that tell bases apart.
ARCHITECTURE_WORDS = {"sd1", "sd2", "sdxl", "sd3", "flux", "addition_embed_type", "text_time", "is_sdxl"}
# The families; the tiny bases tests build, and the command that builds them (`artlora demo tiny-model --arch`).
FAMILY_OWNED = ("artlora.diffusion.families", "artlora.demo", "artlora.cli.demo")


def architecture_leaks(trees: dict[str, ast.Module]) -> list[str]:
    """Modules outside the families that import an architecture class or compare against an architecture word."""
    found = []
    for module, tree in trees.items():
        if module.startswith(FAMILY_OWNED):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and any(ARCHITECTURE_CLASS.match(a.name) for a in node.names):
                found.append(f"{module} imports {[a.name for a in node.names]}")
            if isinstance(node, ast.Compare):
                words = {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
                names = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
                names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                if (words | names) & ARCHITECTURE_WORDS:
                    found.append(f"{module}:{node.lineno} branches on {sorted((words | names) & ARCHITECTURE_WORDS)}")
    return found


def test_only_the_families_know_the_architectures():
    trees = {name: tree for name, (_, tree) in SOURCES.items()}
    assert architecture_leaks(trees) == []


def test_a_planted_architecture_branch_is_found():
    planted = {
        "artlora.stages.train.x": ast.parse("if pipe.unet.config.addition_embed_type == 'text_time':\n    pass\n"),
        "artlora.generate.y": ast.parse("from diffusers import FluxPipeline\n"),
        "artlora.diffusion.families.z": ast.parse("if name == 'sdxl':\n    pass\n"),  # a family may
    }
    leaks = architecture_leaks(planted)
    assert len(leaks) == 2 and leaks[0].startswith("artlora.stages.train.x:1") and "FluxPipeline" in leaks[1]
