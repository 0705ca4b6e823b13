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
from artlora.generate import sheet
from artlora.generate.painting import PRECISIONS, Painter, choose_device, choose_precision
from artlora.generate.run import Request, generate
from artlora.generate.settings import GenerateError, Settings

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


def test_several_prompts_are_painted_from_one_load_at_the_size_asked_for(capsys, model, tmp_path):
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("a harbour at dusk\n\n  a fox  \n")
    args = ["--model", f"models:/{model}@champion", "--prompt", PROMPT, "--prompts-file", str(prompts_file)]
    sheet_path = tmp_path / "sheet.png"
    args += ["--width", "48", "--height", "32", "--steps", "2", "--seed", "3", "--count", "2"]
    args += ["--contact-sheet", str(sheet_path), "--out", str(tmp_path / "images")]
    with mock.patch.object(loading, "load_pipeline", wraps=loading.load_pipeline) as load_pipeline:
        assert main(["generate", *args]) == 0
    assert load_pipeline.call_count == 1  # one load of the base model for all six images

    result = json.loads(capsys.readouterr().out)
    written = [Path(path) for path in result["images"]]
    slugs = ["a-woodcut-of-a-tree", "a-harbour-at-dusk", "a-fox"]
    assert [path.name for path in written] == [f"{model}-v1-{slug}-{seed}.png" for slug in slugs for seed in (3, 4)]
    expected = [(prompt, seed) for prompt in (PROMPT, "a harbour at dusk", "a fox") for seed in (3, 4)]
    for path, (prompt, seed) in zip(written, expected, strict=True):
        with Image.open(path) as image:
            assert image.size == (48, 32)  # (width, height), not the tiny model's 64 x 64
            assert (image.text["prompt"], image.text["seed"]) == (prompt, str(seed))  # metadata per image
            settings = json.loads(image.text["settings"])
            assert (settings["width"], settings["height"]) == (48, 32)

    # The contact sheet: 6 images in 3 columns and 2 rows of equal cells, each cell holding its image.
    assert Path(result["contact_sheet"]) == sheet_path
    cells = [sheet.Cell(Image.open(path), prompt, seed) for path, (prompt, seed) in zip(written, expected, strict=True)]
    width, height = sheet.cell_size(cells)
    with Image.open(sheet_path) as contact:
        assert sheet.columns_for(6) == 3
        assert contact.size == (3 * width, 2 * height)
        drawn = pixels(contact)
    for index, cell in enumerate(cells):
        left, top = sheet.image_position(cell, (index % 3) * width, (index // 3) * height, width)
        assert np.array_equal(drawn[top : top + 32, left : left + 48], pixels(cell.image)), f"cell {index}"
        caption = drawn[
            top + 32 + sheet.PADDING : (index // 3 + 1) * height, (index % 3) * width : (index % 3 + 1) * width
        ]
        assert (caption < 128).any(), f"no caption under cell {index}"  # dark text on white


@pytest.mark.parametrize(("option", "value"), [("--width", "100"), ("--height", "0"), ("--width", "-8")])
def test_a_size_that_is_no_positive_multiple_of_8_is_refused_in_one_line(capsys, option, value, tmp_path):
    args = ["--model", "models:/nobody@champion", "--prompt", PROMPT, option, value, "--out", str(tmp_path)]
    with mock.patch.object(loading, "load_pipeline", wraps=loading.load_pipeline) as load_pipeline:
        assert main(["generate", *args]) == 2
    assert not load_pipeline.called
    error = capsys.readouterr().err.strip()
    assert (
        error == f"artlora generate: error: {option} {value}: must be a positive multiple of 8 pixels (e.g. 512 or 768)"
    )


def test_nothing_to_paint_is_refused_in_one_line(capsys, tmp_path):
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n  \n")
    args = ["--model", "models:/nobody@champion", "--prompts-file", str(empty), "--out", str(tmp_path)]
    assert main(["generate", *args]) == 2
    assert capsys.readouterr().err.strip().endswith("no prompts in it (write one prompt per line)")
    assert main(["generate", "--model", "models:/nobody@champion", "--out", str(tmp_path)]) == 2
    assert "nothing to paint" in capsys.readouterr().err


def test_the_contact_sheet_grows_with_the_grid():
    def cells(count, size=(64, 64)):
        return [sheet.Cell(Image.new("RGB", size, "red"), f"prompt {index}", 0) for index in range(count)]

    width, height = sheet.cell_size(cells(1))
    assert sheet.contact_sheet(cells(1)).size == (width, height)
    assert sheet.contact_sheet(cells(4)).size == (2 * width, 2 * height)
    assert sheet.contact_sheet(cells(5)).size == (3 * width, 2 * height)
    wide_width, _ = sheet.cell_size(cells(1, (512, 64)))
    assert sheet.contact_sheet(cells(2, (512, 64))).size[0] == 2 * wide_width > 2 * width
