"""Every model family (SD 1.x/2.x, SDXL, SD 3.5, Flux.1) through the same end-to-end test on its tiny in-code
base: the five stages (ingest, augment, train, evaluate, register into the session's MLflow server), `artlora
generate` from the registered version, the pyfunc flavour painting it, a training killed with SIGKILL after a
checkpoint and resumed to the same adapter, the single-file (kohya/ComfyUI) export loaded back, and a grid
search's tasks keeping the better of two trials.

Each family's run is made once (a module-scoped fixture) and its tests look at it. What is particular to one
family (SDXL's time ids, SD 2.x's v-prediction metadata, the tiny bases' builds) is tested beside it:
test_sdxl.py, test_sd2.py, tests/diffusion/test_families.py."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import mlflow
import numpy as np
import pytest
import torch
import yaml
from adapter_files import adapter_weights
from PIL import Image
from registered import register_as, unique_model_name
from small_configs import FAMILIES, STEPS, T5_LENGTH, family_overrides, small_config_for

from artlora.cli import main
from artlora.config import PipelineConfig, with_inputs
from artlora.data.latent_cache import load_split, read_shard
from artlora.demo import tiny
from artlora.diffusion import families, loading
from artlora.generate.painting import Painter
from artlora.generate.settings import Settings
from artlora.io import settings, storage
from artlora.registry import references
from artlora.stages.augment import run as augment
from artlora.stages.augment.run import AugmentResult
from artlora.stages.evaluate import run as evaluate
from artlora.stages.evaluate.run import EvaluateResult
from artlora.stages.ingest import run as ingest
from artlora.stages.ingest.run import IngestResult
from artlora.stages.register.run import RegisterResult
from artlora.stages.train import checkpoints
from artlora.stages.train import run as train
from artlora.stages.train.run import TrainResult

pytestmark = pytest.mark.slow

TEST_BUCKET = "s3://artlora-tests"  # the session store's bucket (conftest.py)

PROMPT = "a woodcut of a tree"
# Pictures at 32 px, where the tiny bases do not paint at their own size (tiny Flux.1: 512 px, as its pipeline
# fixes the latent size); a small adapter's change shows more in fewer pixels, too.
SIZE = (32, 32)
SMALL = ("--width", "32", "--height", "32")


@dataclass(frozen=True)
class FamilyRun:
    """One family's pipeline, run once: its tiny base, config and each stage's result, tracked and registered on
    the session's MLflow server."""

    family: str
    base: Path
    config: PipelineConfig
    dataset: IngestResult
    augmented: AugmentResult
    augmented_again: AugmentResult  # the same augment run again: everything reused
    trained: TrainResult
    evaluated: EvaluateResult
    registered: RegisterResult

    @property
    def reference(self) -> str:
        return f"models:/{self.registered.model_name}@champion"

    def config_at(self, storage_root: str, *extra: str) -> PipelineConfig:
        """The same config under another storage root (another run of the same training), `extra` overrides
        after it."""
        source = Path(self.config.ingest.source)
        return small_config_for(storage_root, self.base, source, *family_overrides(self.family), *extra)


@pytest.fixture(scope="module", params=FAMILIES)
def run(request, mlflow_server, sample_folder, tmp_path_factory) -> FamilyRun:
    family = request.param
    base = tiny.save_tiny(tmp_path_factory.mktemp(f"tiny-{family}") / "model", family)
    environment = {**mlflow_server.environment(), settings.WORK_DIR: str(tmp_path_factory.mktemp(f"work-{family}"))}
    with mock.patch.dict(os.environ, environment):
        root = f"{TEST_BUCKET}/families-{family}-{uuid.uuid4().hex[:8]}"
        config = small_config_for(root, base, sample_folder, *family_overrides(family))
        dataset = ingest.run(config.ingest)
        augmented = augment.run(with_inputs(config.augment, dataset_uri=dataset.dataset_uri))
        again = augment.run(with_inputs(config.augment, dataset_uri=dataset.dataset_uri))
        trained = train.run(with_inputs(config.train, cache_uri=augmented.cache_uri))
        inputs = {"adapter_uri": trained.adapter_uri, "cache_uri": augmented.cache_uri, "run_id": trained.run_id}
        evaluated = evaluate.run(with_inputs(config.evaluate, **inputs))
        registered = register_as(config.register, unique_model_name(), trained.adapter_uri, trained.run_id)
    return FamilyRun(family, base, config, dataset, augmented, again, trained, evaluated, registered)


def pixels(image: Path | bytes | Image.Image) -> np.ndarray:
    """An image, a PNG file or PNG bytes as RGB integers."""
    if not isinstance(image, Image.Image):
        image = Image.open(io.BytesIO(image) if isinstance(image, bytes) else image)
    return np.asarray(image.convert("RGB")).astype(int)


def generate(reference: str, out: Path, *args: str) -> tuple[Path, dict[str, str]]:
    """`artlora generate` (in this process), 2 steps, seed 0: the PNG and its text chunks."""
    command = ["generate", "--model", reference, "--prompt", PROMPT, "--steps", "2", "--out", str(out), *args]
    assert main(command) == 0
    [path] = out.glob("*.png")
    with Image.open(path) as image:
        return path, dict(image.text)


def test_the_five_stages_run_on_the_family(run: FamilyRun, tracking_server):
    assert run.dataset.accepted > 0 and run.augmented.encoded_views > 0
    again = run.augmented_again
    assert again.cache_uri == run.augmented.cache_uri and again.encoded_views == 0 and again.encoded_captions == 0

    pipe = loading.load_pipeline(str(run.base))
    assert families.of(pipe).name == run.family
    data = load_split(run.augmented.cache_uri, "train")
    assert data.architecture == run.family
    assert data.groups[0].latents.shape[1] == pipe.vae.config.latent_channels

    assert run.trained.adapter_step == STEPS and run.trained.resumed_from is None
    assert run.trained.kohya_file == train.kohya_file_name(
        with_inputs(run.config.train, cache_uri=run.augmented.cache_uri)
    )
    assert 0 < run.evaluated.val_loss_lora != run.evaluated.val_loss_base > 0

    version = references.resolve(run.reference)
    assert (version.name, version.version) == (run.registered.model_name, run.registered.version)
    assert run.registered.alias == "champion" and not run.registered.reused


def encoded(pipe, family: str, caption: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A caption's states as the family's own diffusers pipeline encodes them: (hidden, pooled or None)."""
    with torch.no_grad():
        if family == "sd1":
            hidden, _ = pipe.encode_prompt(caption, "cpu", 1, False)
            return hidden[0], None
        if family == "sdxl":
            hidden, _, pooled, _ = pipe.encode_prompt(caption, device="cpu", do_classifier_free_guidance=False)
        elif family == "sd3":
            hidden, _, pooled, _ = pipe.encode_prompt(
                caption, None, None, do_classifier_free_guidance=False, max_sequence_length=T5_LENGTH
            )
        else:
            hidden, pooled, _ = pipe.encode_prompt(caption, None, max_sequence_length=T5_LENGTH)
    return hidden[0], pooled[0]


def test_the_text_cache_holds_what_the_family_pipeline_encodes(run: FamilyRun, store):
    index = store.get_json(run.augmented.cache_uri)
    assert all(("time_ids" in entry) == families.named(run.family).time_ids for entry in index["entries"])
    entry = index["entries"][0]
    hidden, pooled = encoded(loading.load_pipeline(str(run.base)), run.family, entry["caption"])
    cached = read_shard(store, entry["text"])
    torch.testing.assert_close(cached["hidden"], hidden)
    if pooled is None:
        assert "pooled" not in cached
    else:
        torch.testing.assert_close(cached["pooled"], pooled)


def test_generate_paints_the_registered_style(run: FamilyRun, tracking_server, tmp_path):
    styled, text = generate(run.reference, tmp_path / "styled", *SMALL)
    assert text["model"] == f"models:/{run.registered.model_name}/{run.registered.version}"
    assert json.loads(text["settings"])["strength"] == 1.0 and pixels(styled).shape == (*SIZE, 3)
    plain, _ = generate(run.reference, tmp_path / "plain", *SMALL, "--strength", "0")
    # The style shows at full strength: more than the rounding two files of one adapter differ by.
    assert np.abs(pixels(styled) - pixels(plain)).max() > 1

    # The version's kohya-layout file holds the same adapter.
    kohya, _ = generate(run.reference, tmp_path / "kohya", *SMALL, "--format", "kohya")
    assert np.abs(pixels(kohya) - pixels(styled)).max() <= 1


def test_the_pyfunc_flavour_paints_what_generate_paints(run: FamilyRun, tracking_server, tmp_path):
    model = mlflow.pyfunc.load_model(run.reference)
    [png] = model.predict([PROMPT], params={"steps": 2, "seed": 0})
    generated, _ = generate(run.reference, tmp_path)  # the pyfunc paints at the base model's own size
    assert np.abs(pixels(png) - pixels(generated)).max() <= 1


# The trainer as `artlora train` runs it, except that it stops for good once its first checkpoint is stored (and
# says so on stdout): the test kills it there, mid-run, with SIGKILL. Without the pause a tiny model's few steps
# could finish before the kill lands.
PAUSED_TRAINER = """
import sys, time
from artlora.cli import main
from artlora.stages.train import run

def save_then_pause(*args, save=run.save_checkpoint, **kwargs):
    save(*args, **kwargs)
    print("checkpoint stored", flush=True)
    time.sleep(600)

run.save_checkpoint = save_then_pause
sys.exit(main(sys.argv[1:]))
"""


def test_a_training_killed_mid_run_resumes_to_the_same_adapter(run: FamilyRun, tracking_server, store, tmp_path):
    config = run.config_at(storage.join(run.config.storage_root, "killed"))
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    train_config = with_inputs(config.train, cache_uri=run.augmented.cache_uri)
    root = train.run_uri(train_config)
    command = ["train", "--config", str(config_path), "--set", f"train.cache_uri={run.augmented.cache_uri}"]

    with (tmp_path / "stderr").open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", PAUSED_TRAINER, *command], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        try:
            said = process.stdout.readline()
            assert said == "checkpoint stored\n", (tmp_path / "stderr").read_text()[-3000:]
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            process.kill()
            process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    assert not store.is_complete(storage.join(root, "adapter")), "the run finished before it was killed"
    assert checkpoints.latest_step(store, root) == 2

    resumed = train.run(train_config)
    assert resumed.resumed_from == 2 and resumed.adapter_step == STEPS
    resumed_weights = adapter_weights(store, resumed.adapter_uri)
    uninterrupted = adapter_weights(store, run.trained.adapter_uri)
    assert resumed_weights.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        assert torch.equal(resumed_weights[key], value), key


def test_the_single_file_export_loads_back_and_paints_as_the_diffusers_adapter(
    run: FamilyRun, tracking_server, tmp_path
):
    for layout in ("diffusers", "kohya"):
        assert main(["models", "download", run.reference, "--out", str(tmp_path / layout), "--format", layout]) == 0
    [diffusers_file] = (tmp_path / "diffusers").glob("*.safetensors")
    [single_file] = (tmp_path / "kohya").glob("*.safetensors")
    assert single_file.name == run.trained.kohya_file

    painters = {path.name: Painter(str(run.base), path, "cpu", "fp32") for path in (diffusers_file, single_file)}
    painted = {name: pixels(painter.paint(PROMPT, 0, Settings(steps=2), SIZE)) for name, painter in painters.items()}
    base = pixels(painters[single_file.name].paint(PROMPT, 0, Settings(steps=2, strength=0), SIZE))
    assert np.abs(painted[single_file.name] - painted[diffusers_file.name]).max() <= 1
    assert np.abs(painted[single_file.name] - base).max() > 1  # the exported file carries the style


def test_a_grid_search_keeps_the_better_trial_on_the_family(run: FamilyRun, tracking_server, tmp_path):
    """The grid search's own task functions, in this process, on the family's cache: the plan (a parent run and each
    trial's config), each trial's train (filed under the parent) and evaluate, and the pick of the best by the
    gate's metric. The pipeline around them knows no family (tests/pipelines/test_search.py runs it through
    kfp.local). The two trials' rates differ by six orders, so their held-out losses differ and the pick can be
    wrong."""
    from kfp import dsl

    from artlora.components.evaluate import evaluate as evaluate_task
    from artlora.components.search import pick_best, plan_search
    from artlora.components.train import train as train_task

    root = f"{TEST_BUCKET}/families-{run.family}-search-{uuid.uuid4().hex[:8]}"
    config = run.config_at(root, "search.learning_rate=[0.00000001, 0.02]")
    config_json = config.model_dump_json()
    plan = plan_search.python_func(config_json=config_json)
    cache = run.augmented.cache_uri
    losses = {}
    for trial in plan.trials:
        trained = train_task.python_func(config_json=trial, cache_uri=cache, parent_run_id=plan.parent_run_id)
        evaluated = evaluate_task.python_func(
            config_json=trial,
            adapter_uri=trained.adapter_uri,
            cache_uri=cache,
            run_id=trained.run_id,
            report=dsl.HTML(name="report", uri=str(tmp_path / f"report-{len(losses)}.html")),
            metrics=dsl.Metrics(name="metrics", uri=str(tmp_path / f"metrics-{len(losses)}")),
        )
        losses[evaluated.run_id] = (evaluated.val_loss_lora, trained.adapter_uri)
    best = pick_best.python_func(config_json=config_json, parent_run_id=plan.parent_run_id, run_ids=list(losses))
    assert len(losses) == 2 and best.run_id == min(losses, key=lambda run_id: losses[run_id][0])
    assert best.adapter_uri == losses[best.run_id][1]
    trials = mlflow.search_runs(
        filter_string=f"tags.`mlflow.parentRunId` = '{plan.parent_run_id}'", search_all_experiments=True
    )
    assert sorted(trials["params.train.learning_rate"].astype(float)) == [0.00000001, 0.02]
