"""Configuration: every shipped config validates, shared keys flow into stages, --set overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from artlora.config import (
    SHARED_KEYS,
    STAGES,
    AugmentConfig,
    ConfigError,
    EvaluateConfig,
    IngestConfig,
    PipelineConfig,
    RegisterConfig,
    TrainConfig,
    load_config,
    parse_override,
    validate,
    with_inputs,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CONFIG_FILES = sorted(CONFIGS.glob("**/*.yaml")) + sorted(CONFIGS.glob("**/*.yml"))

MINIMAL = {
    "storage_root": "s3://artlora",
    "base_model": "org/model",
    "model_name": "my-style",
    "ingest": {"source": "s3://artlora/raw"},
}


def write(tmp_path: Path, data, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.fixture
def minimal(tmp_path) -> Path:
    return write(tmp_path, MINIMAL)


# -- shipped configs ----------------------------------------------------------------------------------


def test_there_are_configs_to_check():
    assert CONFIG_FILES, f"no YAML configs under {CONFIGS}"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_validates(path: Path):
    config = load_config(path)
    assert isinstance(config, PipelineConfig)
    raw = yaml.safe_load(path.read_text())
    # Every value the file sets shows up in the validated config (nothing silently dropped or renamed).
    for key in SHARED_KEYS:
        if key in raw:
            assert getattr(config, key) == raw[key]
    for stage in STAGES:
        # As YAML holds them: lists for tuples, mappings for settings groups (register.gate's rules).
        section = getattr(config, stage).model_dump(mode="json", exclude_unset=True)
        for key, value in (raw.get(stage) or {}).items():
            assert section[key] == value, f"{stage}.{key}"
    resolved = config.model_dump(mode="json")
    for section in ("search", "cluster"):
        _assert_within(raw.get(section) or {}, resolved[section], section)


def _assert_within(given, resolved, where: str) -> None:
    """Every value a nested section sets is in the resolved config (the rest are defaults)."""
    if isinstance(given, dict):
        for key, value in given.items():
            _assert_within(value, resolved[key], f"{where}.{key}")
    elif isinstance(given, list) and given and isinstance(given[0], dict):
        for index, (item, got) in enumerate(zip(given, resolved, strict=True)):
            _assert_within(item, got, f"{where}[{index}]")
    else:
        assert resolved == given, where


# -- shared keys --------------------------------------------------------------------------------------


def test_shared_keys_flow_into_every_stage_that_has_the_field(minimal):
    config = load_config(minimal, ["seed=7", "experiment=exp"])
    for stage in STAGES:
        section = getattr(config, stage)
        fields = type(section).model_fields
        for key in SHARED_KEYS:
            if key in fields:
                assert getattr(section, key) == getattr(config, key), f"{stage}.{key}"
    assert config.register.model_name == "my-style"
    assert config.train.base_model == config.augment.base_model == config.evaluate.base_model == "org/model"
    assert config.ingest.seed == config.train.seed == 7
    assert config.augment.experiment == "exp"
    # Keys a stage has no field for are not forced into it (that would be an "extra" error).
    assert "base_model" not in IngestConfig.model_fields
    assert "model_name" not in TrainConfig.model_fields


def test_a_section_value_beats_the_shared_key(minimal):
    config = load_config(minimal, ["seed=3", "train.seed=11", "augment.storage_root=s3://other-bucket"])
    assert config.train.seed == 11
    assert config.ingest.seed == config.augment.seed == config.evaluate.seed == 3
    assert config.augment.storage_root == "s3://other-bucket"
    assert config.train.storage_root == config.storage_root == "s3://artlora"


def test_missing_sections_take_defaults(minimal):
    config = load_config(minimal)
    assert config.train == TrainConfig(storage_root="s3://artlora", base_model="org/model")
    assert config.augment.resolution == AugmentConfig.model_fields["resolution"].default
    assert config.augment.dataset_uri is None


def test_empty_section_is_allowed(tmp_path):
    text = "storage_root: s3://artlora\nbase_model: a/b\nmodel_name: m\ningest:\n  source: raw\ntrain:\n"
    path = write(tmp_path, text)
    assert load_config(path).train.rank == TrainConfig.model_fields["rank"].default


# -- --set overrides ----------------------------------------------------------------------------------


def test_set_overrides_nested_values_with_yaml_types(minimal):
    config = load_config(
        minimal,
        [
            "train.max_steps=10",
            "train.learning_rate=3e-4",
            "augment.hflip=false",
            "ingest.val_fraction=0.25",
            "evaluate.prompts=[a cat, a dog]",
            "evaluate.image_seeds=[3, 4, 5]",
            "train.target_modules=[to_q, to_v]",
        ],
    )
    assert config.train.max_steps == 10 and isinstance(config.train.max_steps, int)
    assert config.train.learning_rate == pytest.approx(3e-4)
    assert config.augment.hflip is False
    assert config.ingest.val_fraction == 0.25
    assert config.evaluate.prompts == ("a cat", "a dog")
    assert config.evaluate.image_seeds == (3, 4, 5)
    assert config.train.target_modules == ("to_q", "to_v")


def test_set_replaces_file_values_and_shared_keys(tmp_path):
    path = write(tmp_path, {**MINIMAL, "train": {"rank": 4, "alpha": 4}})
    config = load_config(path, ["train.rank=16", "storage_root=s3://elsewhere"])
    assert (config.train.rank, config.train.alpha) == (16, 4)
    assert config.ingest.storage_root == config.train.storage_root == "s3://elsewhere"


def test_set_creates_a_missing_section(minimal):
    config = load_config(minimal, ["register.gate=[{metric: val_loss, over_champion: 0}]"])
    assert config.register.gate[0].metric == "val_loss"


def test_set_value_may_contain_equals_signs_and_later_sets_win(minimal):
    config = load_config(minimal, ["evaluate.prompts=[a=b]", "train.rank=2", "train.rank=3"])
    assert config.evaluate.prompts == ("a=b",)
    assert config.train.rank == 3


def test_set_leaves_the_file_untouched(minimal):
    before = minimal.read_text()
    load_config(minimal, ["train.rank=2"])
    assert minimal.read_text() == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train.max_steps=10", (["train", "max_steps"], 10)),
        ("augment.hflip=no", (["augment", "hflip"], False)),
        ("seed= 5 ", (["seed"], 5)),
        ("evaluate.prompts=[x, y]", (["evaluate", "prompts"], ["x", "y"])),
        ("train.cache_uri=", (["train", "cache_uri"], "")),
        ("model_name='007'", (["model_name"], "007")),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["train.rank", "=5", " =5", ""])
def test_malformed_set_raises_config_error(minimal, text):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(minimal, [text])


def test_set_through_a_value_raises_config_error(minimal):
    with pytest.raises(ConfigError, match="'storage_root' is a value, not a section"):
        load_config(minimal, ["storage_root.deep=1"])
    with pytest.raises(ConfigError, match="'rank' is a value, not a section"):
        load_config(minimal, ["train.rank=4", "train.rank.deep=1"])


# -- validation errors name the field -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.rank=0", "train.rank"),
        ("train.rank=257", "train.rank"),
        ("train.perceptual_net=resnet", "train.perceptual_net"),
        ("train.target_modules=[]", "train.target_modules"),
        ("augment.resolution=30", "augment.resolution"),
        ("augment.resolution=100", "augment.resolution"),
        ("augment.bogus=1", "augment.bogus"),
        ("ingest.val_fraction=1.0", "ingest.val_fraction"),
        ("ingest.min_size=abc", "ingest.min_size"),
        ("evaluate.prompts=[]", "evaluate.prompts"),
        ('register.model_name="bad name!"', "register.model_name"),
        ("storage_root=/local/folder", "storage_root"),
        ("ingest.storage_root=minio://x", "ingest.storage_root"),
        ("seed=-1", "seed"),
        ("bogus=1", "bogus"),
        ("train=5", "train"),
    ],
)
def test_bad_value_names_the_dotted_field(minimal, override, field):
    with pytest.raises(ConfigError) as info:
        load_config(minimal, [override])
    message = str(info.value)
    assert f"  {field}: " in message, message
    assert str(minimal) in message


def test_bad_shared_value_is_reported_in_the_stage_that_receives_it(minimal):
    with pytest.raises(ConfigError, match=r"register\.model_name"):
        load_config(minimal, ["model_name=bad name!"])


def test_missing_required_fields_are_named(tmp_path):
    path = write(tmp_path, {"storage_root": "s3://artlora"})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    for field in ("base_model", "model_name", "ingest.source"):
        assert f"  {field}: " in message, message
    assert "(got" not in message.split("ingest.source")[1].splitlines()[0]


def test_blank_base_model_is_rejected(minimal):
    with pytest.raises(ConfigError, match="base_model"):
        load_config(minimal, ["base_model=' '"])


def test_validate_names_its_source():
    with pytest.raises(ConfigError, match="invalid config in my-dict"):
        validate({**MINIMAL, "train": {"rank": 0}}, source="my-dict")


# -- file problems ------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)


def test_invalid_yaml(tmp_path):
    path = write(tmp_path, "train: {rank: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping(tmp_path, text):
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path, text))


def test_empty_file_reports_missing_fields_not_a_crash(tmp_path):
    with pytest.raises(ConfigError, match="model_name"):
        load_config(write(tmp_path, ""))


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# -- require / with_inputs / frozen -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "field"),
    [("augment", "dataset_uri"), ("train", "cache_uri"), ("evaluate", "adapter_uri"), ("evaluate", "run_id")],
)
def test_require_names_the_field_and_the_set_to_use(minimal, stage, field):
    section = getattr(load_config(minimal), stage)
    with pytest.raises(ConfigError) as info:
        section.require(field)
    message = str(info.value)
    assert f"{stage}.{field} is required" in message
    assert f"--set {stage}.{field}=" in message


def test_require_rejects_empty_string_and_passes_when_set(minimal):
    config = load_config(minimal, ["register.adapter_uri="])
    with pytest.raises(ConfigError, match=r"--set register\.adapter_uri="):
        config.register.require("adapter_uri", "run_id")
    filled = with_inputs(config.register, adapter_uri="s3://a/b", run_id="abc")
    filled.require("adapter_uri", "run_id")  # no error
    assert isinstance(filled, RegisterConfig) and filled.model_name == "my-style"


def test_with_inputs_validates_again(minimal):
    config = load_config(minimal)
    filled = with_inputs(config.train, cache_uri="s3://artlora/cache/index/x.json")
    assert filled.cache_uri == "s3://artlora/cache/index/x.json"
    assert config.train.cache_uri is None  # the original is unchanged
    with pytest.raises(ValidationError):
        with_inputs(config.train, bogus=1)


@pytest.mark.parametrize("cls", [IngestConfig, AugmentConfig, TrainConfig, EvaluateConfig, RegisterConfig])
def test_stage_configs_forbid_unknown_fields(cls):
    assert cls.model_config["extra"] == "forbid" and cls.model_config["frozen"] is True


def test_configs_are_frozen(minimal):
    config = load_config(minimal)
    with pytest.raises(ValidationError, match="frozen"):
        config.train.rank = 99
    with pytest.raises(ValidationError, match="frozen"):
        config.seed = 1
    with pytest.raises(ValidationError, match="frozen"):
        config.train = config.train
    with pytest.raises(AttributeError):
        config.evaluate.prompts.append("x")  # tuples, so not even the lists can change in place
    assert config.train.rank == TrainConfig.model_fields["rank"].default


def test_configs_are_hashable_and_compare_by_value(minimal):
    a, b = load_config(minimal), load_config(minimal)
    assert a == b and hash(a.train) == hash(b.train)
    assert load_config(minimal, ["train.rank=2"]) != a


def test_set_into_an_empty_section(tmp_path):
    text = "storage_root: s3://artlora\nbase_model: a/b\nmodel_name: m\ningest:\n  source: raw\ntrain:\n  # rank: 4\n"
    path = write(tmp_path, text)
    assert load_config(path).train.rank == TrainConfig.model_fields["rank"].default
    assert load_config(path, ["train.rank=2"]).train.rank == 2


def test_empty_ingest_source_is_rejected(minimal):
    with pytest.raises(ConfigError, match=r"ingest\.source"):
        load_config(minimal, ["ingest.source="])
