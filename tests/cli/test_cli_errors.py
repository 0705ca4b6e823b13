"""Every command, given a bad config value, a missing input or a bad base model, prints one error line that
names the input and exits with code 2: no traceback. In-process through `cli.main` (what the console script
calls); `test_cli.py` runs the real console script in a subprocess."""

from __future__ import annotations

import shutil

import pytest
import yaml

from artlora import cli


@pytest.fixture
def config_file(small_config, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(small_config.model_dump(mode="json")))
    return str(path)


def fails_clearly(capsys, argv: list[str], command: str, *named: str) -> str:
    """Run the CLI; it must exit 2 with exactly one error line, naming each of `named`, and no traceback."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("artlora ")]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"artlora {command}: error: "), err
    for text in named:
        assert text in lines[0], lines[0]
    return lines[0]


# A value each command's config refuses, and the field the error must name.
BAD_VALUES = {
    "ingest": "ingest.min_size=0",
    "augment": "augment.views_per_image=0",
    "train": "train.rank=0",
    "evaluate": "evaluate.inference_steps=0",
    "register": "register.model_name=no spaces allowed",
}


@pytest.mark.parametrize("stage", sorted(BAD_VALUES))
def test_a_bad_config_value_names_the_field(capsys, config_file, stage):
    field = BAD_VALUES[stage].split("=")[0]
    argv = [stage, "--config", config_file, "--set", BAD_VALUES[stage]]
    line = fails_clearly(capsys, argv, stage, field, config_file)
    assert f"invalid config in {config_file}: {field}: " in line, line  # reads on, no stray '; '


def test_several_bad_config_values_are_listed_on_the_one_line(capsys, config_file):
    argv = ["train", "--config", config_file, "--set", "train.rank=0", "--set", "train.max_steps=0"]
    line = fails_clearly(capsys, argv, "train", "train.rank", "train.max_steps")
    assert f"invalid config in {config_file}: train." in line and "; train." in line, line


NOWHERE = "http://127.0.0.1:9"  # the config is refused before any host is asked
WHOLE_PIPELINE = {
    "pipeline run": ["pipeline", "run", "--local"],
    "pipeline compile": ["pipeline", "compile", "--out", "pipeline.yaml"],
    "pipeline submit": ["pipeline", "submit", "--host", NOWHERE],
    "pipeline schedule": ["pipeline", "schedule", "--host", NOWHERE, "--cron", "0 0 3 * * *"],
    "search": ["search", "--local"],
    "retrain-if-changed": ["retrain-if-changed", "--local"],
    "demo": ["demo"],
}


@pytest.mark.parametrize("command", sorted(WHOLE_PIPELINE))
def test_whole_pipeline_commands_name_the_bad_field_and_the_missing_file(capsys, config_file, command):
    argv = WHOLE_PIPELINE[command]
    fails_clearly(capsys, [*argv, "--config", config_file, "--set", "train.max_steps=0"], command, "train.max_steps")
    fails_clearly(capsys, [*argv, "--config", "missing.yaml"], command, "missing.yaml")


def test_a_config_file_that_is_not_yaml_is_named(capsys, tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_bytes(bytes(range(256)))
    fails_clearly(capsys, ["ingest", "--config", str(path)], "ingest", str(path))


@pytest.mark.parametrize("stage", ["augment", "train", "evaluate"])
def test_a_bad_base_model_is_named_before_any_work(capsys, config_file, tmp_path, stage):
    missing = str(tmp_path / "no-such-model")
    inputs = {
        "augment": ["augment.dataset_uri=s3://nowhere/datasets/x"],
        "train": ["train.cache_uri=s3://nowhere/cache/index/x.json"],
        "evaluate": ["evaluate.adapter_uri=s3://x/a", "evaluate.cache_uri=s3://x/c.json", "evaluate.run_id=r"],
    }[stage]
    overrides = [arg for item in [f"{stage}.base_model={missing}", *inputs] for arg in ("--set", item)]
    fails_clearly(capsys, [stage, "--config", config_file, *overrides], stage, missing)


def test_a_base_model_prefix_without_a_model_is_named(capsys, config_file, bucket, store):
    store.put_bytes(f"{bucket}/models/empty/readme.txt", b"not a model")
    argv = ["train", "--config", config_file, "--set", f"train.base_model={bucket}/models/empty"]
    fails_clearly(capsys, [*argv, "--set", "train.cache_uri=s3://x/c.json"], "train", "model_index.json")
    argv = ["train", "--config", config_file, "--set", f"train.base_model={bucket}/models/none"]
    fails_clearly(capsys, [*argv, "--set", "train.cache_uri=s3://x/c.json"], "train", f"{bucket}/models/none")


@pytest.mark.parametrize("kind", ["corrupt-safetensors", "folder-without-index", "ckpt", "bin-weights"])
def test_a_base_model_that_cannot_load_is_named_with_what_to_do(capsys, config_file, tmp_path, tiny_model_dir, kind):
    if kind == "corrupt-safetensors":
        model, advice = tmp_path / "model.safetensors", "intact .safetensors"
        model.write_bytes(b"\x00" * 64)
    elif kind == "folder-without-index":
        model, advice = tmp_path / "weights-only", "model_index.json"
        model.mkdir()
        (model / "unet.safetensors").write_bytes(b"")
    elif kind == "ckpt":
        model, advice = tmp_path / "model.ckpt", "--to_safetensors"
        model.write_bytes(b"\x80\x04K\x01.")
    else:
        model, advice = shutil.copytree(tiny_model_dir, tmp_path / "bin-weights"), "safe_serialization=True"
        for weights in (model / "vae").glob("*.safetensors"):
            weights.rename(weights.with_suffix(".bin"))
    argv = ["augment", "--config", config_file, "--set", f"augment.base_model={model}"]
    fails_clearly(
        capsys, [*argv, "--set", "augment.dataset_uri=s3://nowhere/datasets/x"], "augment", str(model), advice
    )


def test_pipeline_run_names_a_bad_base_model_before_starting_tasks(capsys, config_file, tmp_path, s3_endpoint):
    missing = str(tmp_path / "no-such-model")
    argv = ["pipeline", "run", "--local", "--config", config_file, "--set", f"train.base_model={missing}"]
    fails_clearly(capsys, argv, "pipeline run", missing)


@pytest.mark.slow
def test_pipeline_run_ends_with_the_failed_tasks_own_error(capsys, config_file, tmp_path, s3_endpoint):
    """The ingest task fails at run time (a source folder without images): the last line is its own error, not
    kfp's "Inner task failed: 'ingest'"."""
    empty = tmp_path / "no-images-here"
    empty.mkdir()
    argv = ["pipeline", "run", "--local", "--config", config_file, "--set", f"ingest.source={empty}"]
    line = fails_clearly(capsys, argv, "pipeline run")
    assert line == (
        f"artlora pipeline run: error: no image files under ingest.source='{empty}' (give the folder or prefix of the "
        "images)"
    )


@pytest.mark.usefixtures("mlflow_db")  # the stages ask the tracking store first: a migrated one
def test_missing_inputs_are_named(capsys, config_file, tmp_path, bucket):
    missing_folder = str(tmp_path / "no-images-here")
    fails_clearly(capsys, ["ingest", "--config", config_file, "--set", f"ingest.source={missing_folder}"], "ingest")
    dataset = f"{bucket}/datasets/0123456789abcdef01234567"
    argv = ["augment", "--config", config_file, "--set", f"augment.dataset_uri={dataset}"]
    fails_clearly(capsys, argv, "augment", dataset)
    cache = f"{bucket}/cache/index/missing.json"
    fails_clearly(capsys, ["train", "--config", config_file, "--set", f"train.cache_uri={cache}"], "train", cache)
    evaluate = ["--set", "evaluate.adapter_uri=s3://x/a", "--set", f"evaluate.cache_uri={cache}"]
    fails_clearly(
        capsys, ["evaluate", "--config", config_file, *evaluate, "--set", "evaluate.run_id=r"], "evaluate", cache
    )
    register = ["--set", "register.adapter_uri=s3://x/a", "--set", "register.run_id=0123456789abcdef"]
    fails_clearly(capsys, ["register", "--config", config_file, *register], "register", "0123456789abcdef")


def test_stage_inputs_left_out_say_which_flag_to_pass(capsys, config_file):
    fails_clearly(capsys, ["train", "--config", config_file], "train", "--set train.cache_uri=")


@pytest.mark.parametrize("command", ["sample-data", "tiny-model"])
def test_an_output_that_is_a_file_is_named(capsys, tmp_path, command):
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder")
    fails_clearly(capsys, [command, "--out", str(taken / "sub")], command, str(taken))


def test_compile_to_a_missing_folder_is_named(capsys, config_file, tmp_path):
    out = str(tmp_path / "no" / "such" / "folder" / "pipeline.yaml")
    fails_clearly(
        capsys, ["pipeline", "compile", "--config", config_file, "--out", out], "pipeline compile", "pipeline.yaml"
    )


def test_retrain_if_changed_names_a_missing_source(capsys, config_file, tmp_path, s3_endpoint):
    missing = str(tmp_path / "no-images-here")
    argv = ["retrain-if-changed", "--local", "--config", config_file, "--set", f"ingest.source={missing}"]
    fails_clearly(capsys, argv, "retrain-if-changed", missing)


def test_verbose_adds_the_traceback(capsys, config_file):
    assert cli.main(["-v", "train", "--config", config_file]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert cli.main(["train", "-v", "--config", config_file]) == 2  # after the command too
    assert "Traceback" in capsys.readouterr().err


def test_rebuild_without_pretrained_says_what_to_add(capsys, tmp_path):
    fails_clearly(capsys, ["tiny-model", "--out", str(tmp_path / "m"), "--rebuild"], "tiny-model", "--pretrained")


def test_the_pretrained_base_is_sd1_only(capsys, tmp_path):
    argv = ["tiny-model", "--out", str(tmp_path / "m"), "--pretrained", "--arch", "sdxl"]
    fails_clearly(capsys, argv, "tiny-model", "drop --arch")
