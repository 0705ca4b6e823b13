"""The pieces around the pipeline, without running it: the typed parameters, the change check's digests, the
search's trials, the summary page, and how the training processes are launched."""

from __future__ import annotations

import base64
import os
import time

import pytest
from small_configs import small_config_for

from artlora.config import ConfigError, PipelineConfig
from artlora.contracts import REGULARISATION_STYLE
from artlora.tasks import changes, launch, parameters, search
from artlora.tasks.search_report import TrialReport, curve_chart


@pytest.fixture
def config(bucket, tiny_model_dir, sample_folder) -> PipelineConfig:
    return small_config_for(bucket, tiny_model_dir, sample_folder)


# -- typed parameters ---------------------------------------------------------------------------------


def test_typed_parameters_win_over_config_json_and_reach_every_stage(config):
    resolved = parameters.resolve(
        config.model_dump_json(), **{**parameters.knob_values(config), "base_model": "org/other", "rank": 16}
    )
    assert resolved.train.rank == 16 and resolved.train.alpha == config.train.alpha
    assert resolved.base_model == resolved.augment.base_model == resolved.evaluate.base_model == "org/other"
    assert resolved.register.base_model == resolved.train.base_model == "org/other"
    assert parameters.resolve(config.model_dump_json(), **parameters.knob_values(config)) == config
    with pytest.raises(ConfigError, match="train.max_steps"):
        parameters.resolve(config.model_dump_json(), max_steps=0)


def test_arguments_are_the_whole_config_and_every_typed_parameter(config):
    arguments = parameters.arguments(config)
    assert set(arguments) == {"config_json", *parameters.KNOBS}
    assert PipelineConfig.model_validate_json(arguments["config_json"]) == config
    assert arguments["dataset_source"] == config.ingest.source and arguments["max_steps"] == config.train.max_steps


# -- the change check's digests -----------------------------------------------------------------------


def test_a_local_listing_changes_with_content_and_files_but_not_with_hidden_files(tmp_path):
    (tmp_path / "style").mkdir()
    (tmp_path / "style" / "a.png").write_bytes(b"\x89PNG" + b"0" * (changes.SMALL_FILE + 10))
    (tmp_path / "style" / "a.txt").write_text("a caption")
    before = changes.source_listing(str(tmp_path))
    assert [name for name, _, _ in before] == ["style/a.png", "style/a.txt"]

    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x").write_text("ignored, as ingest ignores it")
    assert changes.source_listing(str(tmp_path)) == before

    (tmp_path / "style" / "a.txt").write_text("a Caption")  # same size, other content: the hash tells
    assert changes.source_listing(str(tmp_path)) != before
    edited = changes.source_listing(str(tmp_path))
    image = tmp_path / "style" / "a.png"
    os.utime(image, ns=(time.time_ns(), image.stat().st_mtime_ns + 10**9))  # a large file: size and mtime tell
    assert changes.source_listing(str(tmp_path)) != edited
    with pytest.raises(changes.SourceError, match="is not a folder"):
        changes.source_listing(str(tmp_path / "missing"))


def test_the_regularisation_images_source_is_part_of_the_listing_under_their_reserved_style(config, tmp_path):
    assert changes.listing_of(config) == changes.source_listing(config.ingest.source), "unchanged without them"
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "a.txt").write_text("a photo of a house")
    ingest = config.ingest.model_copy(update={"regularisation_source": str(tmp_path)})
    with_them = config.model_copy(update={"ingest": ingest})
    listing = changes.listing_of(with_them)
    assert {name for name, _, _ in listing} - {name for name, _, _ in changes.listing_of(config)} == {
        f"{REGULARISATION_STYLE}/a.png",
        f"{REGULARISATION_STYLE}/a.txt",
    }
    (tmp_path / "a.txt").write_text("a photo of a barn")
    assert changes.listing_of(with_them) != listing, "a changed regularisation caption is a change"


def test_an_s3_listing_has_keys_sizes_and_etags_relative_to_the_source(store, bucket, sample_folder):
    source = f"{bucket}/raw"
    store.upload_dir(sample_folder, source)
    listing = changes.source_listing(source)
    local = changes.source_listing(str(sample_folder))
    assert [(name, size) for name, size, _ in listing] == [(name, size) for name, size, _ in local]
    assert all(len(etag) == 32 for _, _, etag in listing)
    store.upload_dir(sample_folder, f"{bucket}/elsewhere")
    assert changes.source_listing(f"{bucket}/elsewhere") == listing


def test_the_config_digest_ignores_where_tasks_run_and_the_single_run_ignores_the_search(config):
    digest = changes.config_digest(config)
    moved = config.model_copy(update={"cluster": config.cluster.model_copy(update={"s3_secret": "other"})})
    searched = config.model_copy(update={"search": config.search.model_copy(update={"rank": (2, 4)})})
    trained = config.model_copy(update={"train": config.train.model_copy(update={"rank": 2})})
    assert changes.config_digest(moved) == digest == changes.config_digest(searched)
    assert changes.config_digest(trained) != digest
    assert changes.config_digest(searched, search=True) != changes.config_digest(config, search=True) != digest


@pytest.mark.usefixtures("mlflow_db")
def test_nothing_registered_means_changed(config):
    checked = changes.check(config)
    assert checked.changed and checked.files == 40  # 20 images and their captions
    assert checked.describe().startswith("changed: no registered version was trained on source fingerprint")


# -- the search's trials and summary ------------------------------------------------------------------


def test_trials_cover_the_grid_or_a_seeded_draw_of_it(bucket, tiny_model_dir, sample_folder):
    def trials(*overrides: str) -> list[dict]:
        return search.trials(small_config_for(bucket, tiny_model_dir, sample_folder, *overrides))

    grid = trials("search.rank=[2, 4]", "search.lr_schedule=[constant, cosine]")
    assert grid == [
        {"rank": 2, "lr_schedule": "constant"},
        {"rank": 2, "lr_schedule": "cosine"},
        {"rank": 4, "lr_schedule": "constant"},
        {"rank": 4, "lr_schedule": "cosine"},
    ]
    space = ("search.rank=[2, 4, 8]", "search.alpha=[1, 2]")
    drawn = trials("search.strategy=random", "search.draws=2", *space)
    assert len(drawn) == 2 and drawn[0] != drawn[1] and all(trial in trials(*space) for trial in drawn)
    assert drawn == trials("search.strategy=random", "search.draws=2", *space), "the seed decides the draw"
    assert trials() == [{}]


def test_trial_configs_change_only_the_searched_settings(bucket, tiny_model_dir, sample_folder):
    config = small_config_for(bucket, tiny_model_dir, sample_folder, "search.learning_rate=[0.1, 0.01]")
    first, second = (PipelineConfig.model_validate_json(text) for text in search.trial_configs(config))
    assert (first.train.learning_rate, second.train.learning_rate) == (0.1, 0.01)
    assert first.train.model_copy(update={"learning_rate": config.train.learning_rate}) == config.train
    assert first.ingest == config.ingest


def test_curves_draw_one_line_per_trial_that_logged_the_metric():
    def trial(number: int, points: list) -> TrialReport:
        return TrialReport(
            number=number,
            run_id=f"run{number}",
            label="x",
            adapter_uri="s3://a/b",
            metrics={},
            curves={"loss": points},
            grid_png=b"",
        )

    uri = curve_chart([trial(1, [(1, 0.5), (2, 0.4)]), trial(2, [(1, 0.6), (2, 0.3)]), trial(3, [])], "loss", "MSE")
    assert uri.startswith("data:image/svg+xml;base64,")
    svg = base64.b64decode(uri.split(",", 1)[1]).decode()
    assert "trial 1" in svg and "trial 2" in svg and "trial 3" not in svg  # the legend
    assert "#1f77b4" in svg and "#ff7f0e" in svg  # each trial in its table colour
    assert "training step" in svg and "MSE" in svg  # both axes labelled
    assert curve_chart([trial(1, [])], "loss", "MSE") == ""  # the page then says nothing was logged


# -- launching the training ---------------------------------------------------------------------------


def test_several_gpus_launch_one_process_each_on_a_free_port(tmp_path):
    command = launch.launch_command(4, tmp_path / "config.yaml")
    assert command[1:3] == ["-m", "accelerate.commands.launch"] and "--multi_gpu" in command
    assert command[command.index("--num_processes") + 1] == "4"
    assert int(command[command.index("--main_process_port") + 1]) > 0
    assert command[command.index("-m", 3) :] == [
        "-m",
        "artlora.cli",
        "train",
        "--config",
        str(tmp_path / "config.yaml"),
    ]


def test_the_first_process_result_is_read_after_mlflow_run_links():
    printed = '🏃 View run train at: http://mlflow/#/runs/1\n{\n  "run_id": "1",\n  "steps": 4\n}\n'
    assert launch._printed_result(printed) == {"run_id": "1", "steps": 4}
    assert launch._printed_result('{"steps": 2}') == {"steps": 2}
