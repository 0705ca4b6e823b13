"""Painting with a registered style: `artlora generate` in both adapter layouts, LoRA dropout off, the strength,
the PNG text chunks, and the MLflow pyfunc flavour (`mlflow.pyfunc.load_model(...).predict(prompts)`)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from unittest import mock

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from registered import register_as, unique_model_name
from safetensors.torch import load_file, save_file

from artlora.cli import main
from artlora.diffusion import loading
from artlora.diffusion.adapters import DIFFUSERS_FILE, read_metadata
from artlora.generate import Request, generate
from artlora.generate.painting import PRECISIONS, GenerateError, Painter, Settings, choose_device, choose_precision

PROMPT = "a woodcut of a tree"
FAST = Settings(steps=2)


@pytest.fixture(scope="module")
def registered(style_run, mlflow_server) -> str:
    """The style adapter as version 1 (champion) of a model of this module's."""
    name = unique_model_name()
    with mock.patch.dict(os.environ, mlflow_server.environment()):
        register_as(style_run.config.register, name, style_run.adapter_uri, style_run.run_id)
    return name


@pytest.fixture
def model(registered, tracking_server) -> str:
    """The registered model's name; this test looks it up on the session's MLflow server."""
    return registered


def pixels(image_or_png) -> np.ndarray:
    image = Image.open(io.BytesIO(image_or_png)) if isinstance(image_or_png, bytes) else image_or_png
    return np.asarray(image.convert("RGB")).astype(int)


def paint(model: str, out: Path, layout: str = "diffusers", **settings) -> np.ndarray:
    request = Request(f"models:/{model}@champion", PROMPT, out, Settings(**{"steps": 2, **settings}), layout=layout)
    return pixels(Image.open(generate(request)[0]))


def test_generate_writes_pngs_that_record_how_they_were_made(capsys, model, tmp_path):
    args = ["--model", f"models:/{model}@champion", "--prompt", PROMPT, "--negative", "blurry", "--strength", "0.8"]
    assert main(["generate", *args, "--steps", "2", "--seed", "5", "--count", "2", "--out", str(tmp_path)]) == 0

    written = [Path(path) for path in json.loads(capsys.readouterr().out)["images"]]
    assert [path.name for path in written] == [f"{model}-v1-a-woodcut-of-a-tree-{seed}.png" for seed in (5, 6)]
    with Image.open(written[0]) as image:
        assert image.size == (64, 64)  # the tiny model's size
        text = dict(image.text)
    assert (text["prompt"], text["negative_prompt"], text["seed"]) == (PROMPT, "blurry", "5")
    assert text["model"] == f"models:/{model}/1"
    settings = json.loads(text["settings"])
    assert (settings["strength"], settings["steps"], settings["guidance"], settings["layout"]) == (
        0.8,
        2,
        7.5,
        "diffusers",
    )
    assert "Negative prompt: blurry" in text["parameters"] and "Seed: 5" in text["parameters"]
    assert not np.array_equal(pixels(Image.open(written[0])), pixels(Image.open(written[1])))  # two seeds


def test_both_adapter_layouts_paint_the_same_style_and_strength_scales_it(model, tmp_path, tiny_model_dir):
    diffusers = paint(model, tmp_path / "d")
    kohya = paint(model, tmp_path / "k", layout="kohya")
    assert np.abs(diffusers - kohya).max() <= 1  # the same weights in two layouts

    pipe = loading.load_pipeline(str(tiny_model_dir))
    pipe.set_progress_bar_config(disable=True)
    base = pixels(pipe(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0])
    assert np.abs(paint(model, tmp_path / "zero", strength=0.0) - base).max() <= 1  # strength 0: the base model
    assert np.abs(diffusers - base).mean() > 1  # the style is visible at full strength


def dropout_adapter(style_run, store, tmp_path: Path, rate: float) -> Path:
    """The trained adapter as another trainer might ship it: LoRA dropout in its metadata, which diffusers applies
    whenever the layers are in training mode (its up-projections scaled, so that dropout shows in the pixels)."""
    path = tmp_path / DIFFUSERS_FILE
    store.get_file(f"{style_run.adapter_uri}/{DIFFUSERS_FILE}", path)
    metadata = read_metadata(path, prefix="")
    config = {
        key: rate if key.endswith("lora_dropout") else value
        for key, value in json.loads(metadata["lora_adapter_metadata"]).items()
    }
    tensors = {name: value * 4 if "lora_B" in name else value for name, value in load_file(path).items()}
    save_file(tensors, path, metadata={**metadata, "lora_adapter_metadata": json.dumps(config)})
    return path


def test_lora_dropout_is_off_when_painting(style_run, store, tmp_path, tiny_model_dir):
    adapter = dropout_adapter(style_run, store, tmp_path, rate=0.5)
    painter = Painter(str(tiny_model_dir), adapter, device="cpu")
    assert painter.pipe.unet.peft_config["style"].lora_dropout == 0.5
    first, second = (pixels(painter.paint(PROMPT, 0, FAST)) for _ in range(2))
    assert np.array_equal(first, second)

    # The expectation: the adapter merged into the weights, where no dropout can act.
    merged = loading.load_pipeline(str(tiny_model_dir))
    merged.load_lora_weights(str(adapter.parent), weight_name=adapter.name)
    merged.fuse_lora()
    merged.unload_lora_weights()
    merged.set_progress_bar_config(disable=True)
    expected = pixels(merged(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0])
    assert np.abs(first - expected).max() <= 1

    # What the test guards against: the layers left in training mode drop activations at random.
    painter.pipe.unet.train()
    assert np.abs(pixels(painter.paint(PROMPT, 0, FAST)) - first).mean() > 0.5


def test_pyfunc_predict_paints_what_generate_paints(model, tmp_path):
    painted = mlflow.pyfunc.load_model(f"models:/{model}@champion")
    pngs = painted.predict([PROMPT, "a harbour"], params={"steps": 2, "seed": 0})

    assert len(pngs) == 2 and all(isinstance(png, bytes) for png in pngs)
    assert np.abs(pixels(pngs[0]) - paint(model, tmp_path)).max() <= 1  # same prompt, seed 0, same settings
    with Image.open(io.BytesIO(pngs[1])) as second:
        assert (second.text["prompt"], second.text["seed"]) == ("a harbour", "1")  # the next seed
        assert second.text["model"] == f"models:/{model}/1"
    framed = painted.predict(pd.DataFrame({"prompt": [PROMPT]}), params={"steps": 2})
    assert np.array_equal(pixels(framed[0]), pixels(pngs[0]))


def test_precision_and_device_follow_the_machine():
    cpu = torch.device("cpu")
    assert choose_precision(cpu, "auto") == torch.float32
    assert choose_precision(cpu, "bf16") == torch.bfloat16
    with pytest.raises(GenerateError, match="fp16 needs a GPU"):
        choose_precision(cpu, "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(GenerateError, match="torch sees no CUDA GPU here"):
            choose_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_the_gpu_paints_what_the_cpu_paints(style_run, store, tmp_path, tiny_model_dir, precision):
    adapter = tmp_path / DIFFUSERS_FILE
    store.get_file(f"{style_run.adapter_uri}/{DIFFUSERS_FILE}", adapter)
    on_cpu = pixels(Painter(str(tiny_model_dir), adapter, device="cpu").paint(PROMPT, 0, FAST))
    gpu = Painter(str(tiny_model_dir), adapter, device="cuda", precision=precision)
    assert gpu.pipe.unet.dtype == PRECISIONS[precision]
    assert np.abs(pixels(gpu.paint(PROMPT, 0, FAST)) - on_cpu).mean() < 3  # half precision rounds, no more
