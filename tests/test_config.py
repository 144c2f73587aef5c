"""Settings: presets, data shape, overrides, config files, checks, round trips (PAPER.md §2-3)."""

import copy
import json
import re

import pytest
from clirun import dcgan

from dcgan.config import PRESETS, TrainConfig, check, differences, from_dict, read_config_file, resolve
from dcgan.errors import DCGANError
from dcgan.models import ModelConfig


def setting(config: TrainConfig, name: str):
    """A resolved setting, wherever it lives (TrainConfig or its ModelConfig)."""
    return getattr(config.model, name) if hasattr(config.model, name) else getattr(config, name)


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def mentions(path) -> str:
    return re.escape(str(path))


# ---------------------------------------------------------------- resolve()


def test_default_preset_is_pytorch():
    config = resolve({})
    assert config.preset == "pytorch"
    assert config.model == ModelConfig(kernel_size=4, ngf=64, ndf=64, nz=100, projection="conv",
                                       latent="normal", image_size=64, channels=3)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_defaults_apply(preset):
    config = resolve({"preset": preset})
    assert config.preset == preset
    for name, value in PRESETS[preset].items():
        assert setting(config, name) == value, name


@pytest.mark.parametrize("preset", ["pytorch", "paper"])
def test_data_shape_fills_channels_and_image_size(preset):
    config = resolve({"preset": preset}, data_shape=(1, 32))
    assert (config.model.channels, config.model.image_size) == (1, 32)


def test_without_data_shape_model_defaults_apply():
    config = resolve({"preset": "paper"})
    assert (config.model.channels, config.model.image_size) == (3, 64)


def test_explicit_settings_win_over_data_shape():
    config = resolve({"channels": 3, "image_size": 64}, data_shape=(1, 32))
    assert (config.model.channels, config.model.image_size) == (3, 64)


def test_explicit_settings_win_over_preset():
    config = resolve({"preset": "paper", "kernel_size": 3, "nz": 64, "ngf": 32, "latent": "normal",
                      "weight_decay": 0.0})
    assert (config.model.kernel_size, config.model.nz, config.model.ngf) == (3, 64, 32)
    assert config.model.latent == "normal"
    assert config.weight_decay == 0.0


def test_imagenet32_keeps_its_image_size_over_the_data_shape():
    config = resolve({"preset": "imagenet32"}, data_shape=(1, 64))
    assert config.model.image_size == 32  # the preset's size beats the data's natural size
    assert config.model.channels == 1  # the data still decides the channels


def test_imagenet32_image_size_can_be_overridden():
    config = resolve({"preset": "imagenet32", "image_size": 64}, data_shape=(1, 16))
    assert config.model.image_size == 64


def test_resolve_does_not_change_the_presets():
    before = copy.deepcopy(PRESETS)
    resolve({"preset": "paper", "kernel_size": 3, "weight_decay": 0.5}, data_shape=(1, 16))
    resolve({"preset": "imagenet32", "image_size": 64}, data_shape=(1, 16))
    assert PRESETS == before
    assert resolve({"preset": "paper"}).model.kernel_size == 5


def test_unknown_preset_lists_the_presets():
    with pytest.raises(DCGANError, match="unknown preset 'dcgan2'") as info:
        resolve({"preset": "dcgan2"})
    for name in PRESETS:
        assert name in str(info.value)


def test_resolve_rejects_unknown_settings():
    with pytest.raises(DCGANError, match="unknown setting.*learning_rate"):
        resolve({"learning_rate": 1e-3})


def test_resolve_applies_check():
    with pytest.raises(DCGANError, match="batch_size must be at least 1"):
        resolve({"batch_size": 0})


# ---------------------------------------------------------------- read_config_file()


def test_reads_flat_yaml(tmp_path):
    path = write(tmp_path, "run.yaml", "preset: paper\nbatch_size: 64\nlr: 0.0001\nkernel_size: 3\n"
                                       "tensorboard: false\nsteps: null\n")
    assert read_config_file(path) == {"preset": "paper", "batch_size": 64, "lr": 1e-4, "kernel_size": 3,
                                      "tensorboard": False, "steps": None}


def test_reads_flat_json(tmp_path):
    settings = {"preset": "paper", "batch_size": 64, "lr": 1e-4, "kernel_size": 3, "tensorboard": False}
    path = write(tmp_path, "run.json", json.dumps(settings))
    assert read_config_file(path) == settings


@pytest.mark.parametrize("name, text", [
    ("run.yaml", "batch_size: 32\nmodel:\n  ngf: 32\n  image_size: 32\n  latent: uniform\n"),
    ("run.json", json.dumps({"batch_size": 32, "model": {"ngf": 32, "image_size": 32, "latent": "uniform"}})),
])
def test_reads_a_nested_model_section(tmp_path, name, text):
    settings = read_config_file(write(tmp_path, name, text))
    assert settings == {"batch_size": 32, "ngf": 32, "image_size": 32, "latent": "uniform"}
    config = resolve(settings)
    assert (config.model.ngf, config.model.image_size, config.model.latent) == (32, 32, "uniform")
    assert config.batch_size == 32


def test_empty_yaml_file_holds_no_settings(tmp_path):
    assert read_config_file(write(tmp_path, "empty.yaml", "")) == {}


@pytest.mark.parametrize("name, text", [("run.yaml", "lr: 1\nweight_decay: 0\n"),
                                        ("run.json", '{"lr": 1, "weight_decay": 0}')])
def test_int_is_accepted_where_a_float_is_expected(tmp_path, name, text):
    settings = read_config_file(write(tmp_path, name, text))
    assert settings == {"lr": 1.0, "weight_decay": 0.0}
    assert type(settings["lr"]) is float and type(settings["weight_decay"]) is float


@pytest.mark.parametrize("text", ["bogus: 1\n", "model:\n  bogus: 1\n"], ids=["flat", "nested"])
def test_unknown_key_names_the_key_and_the_file(tmp_path, text):
    path = write(tmp_path, "run.yaml", text)
    with pytest.raises(DCGANError, match=rf"{mentions(path)}.*unknown setting.*bogus"):
        read_config_file(path)


@pytest.mark.parametrize("key, value", [("batch_size", '"big"'), ("lr", '"fast"'), ("tensorboard", "3"),
                                        ("batch_size", "true"), ("steps", "1.5"), ("preset", "4")])
def test_wrong_type_names_the_key(tmp_path, key, value):
    path = write(tmp_path, "run.yaml", f"{key}: {value}\n")
    with pytest.raises(DCGANError, match=rf"{mentions(path)}: {key} must be"):
        read_config_file(path)


@pytest.mark.parametrize("name, text", [("run.yaml", "batch_size: [1, 2\n"),
                                        ("run.json", '{"batch_size": 1,')])
def test_invalid_file_names_the_file(tmp_path, name, text):
    path = write(tmp_path, name, text)
    with pytest.raises(DCGANError, match=rf"config file {mentions(path)} is not valid"):
        read_config_file(path)


@pytest.mark.parametrize("name, text", [("run.yaml", "- 1\n- 2\n"), ("run.json", "[1, 2]"),
                                        ("words.yaml", "just some words\n")])
def test_non_mapping_top_level_names_the_file(tmp_path, name, text):
    path = write(tmp_path, name, text)
    with pytest.raises(DCGANError, match=rf"config file {mentions(path)} must hold a mapping"):
        read_config_file(path)


def test_non_mapping_model_section_names_the_file(tmp_path):
    path = write(tmp_path, "run.yaml", "model: [1, 2]\n")
    with pytest.raises(DCGANError, match=rf"{mentions(path)}: `model` must be a mapping"):
        read_config_file(path)


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(DCGANError, match=rf"cannot read config file {mentions(path)}"):
        read_config_file(path)


# ---------------------------------------------------------------- check()


@pytest.mark.parametrize("settings, message", [
    ({"steps": 10, "epochs": 2}, "either steps or epochs, not both"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"batch_size": -4}, "batch_size must be at least 1"),
    ({"steps": 0}, "steps must be at least 1"),
    ({"lr": 0.0}, "lr must be positive"),
    ({"lr": -2e-4}, "lr must be positive"),
    ({"beta1": 1.0}, "beta1 and beta2 must lie in"),
    ({"beta1": -0.1}, "beta1 and beta2 must lie in"),
    ({"label_smoothing": 1.0}, "label_smoothing must lie in"),
    ({"label_smoothing": -0.1}, "label_smoothing must lie in"),
])
def test_check_rejects(settings, message):
    with pytest.raises(DCGANError, match=re.escape(message)):
        check(TrainConfig(model=ModelConfig(), **settings))


@pytest.mark.parametrize("settings", [{}, {"steps": 10}, {"epochs": 2}, {"beta1": 0.0},
                                      {"beta1": 0.9}, {"label_smoothing": 0.1}, {"batch_size": 1}])
def test_check_accepts_valid_settings(settings):
    check(TrainConfig(model=ModelConfig(), **settings))


# ---------------------------------------------------------------- round trip and differences


@pytest.mark.parametrize("preset", PRESETS)
def test_from_dict_inverts_to_dict(preset):
    config = resolve({"preset": preset, "steps": 5, "seed": 3, "out": "runs/x"}, data_shape=(1, 32))
    again = from_dict(config.to_dict())
    assert again == config
    assert isinstance(again.model, ModelConfig)
    assert from_dict(json.loads(json.dumps(config.to_dict()))) == config  # as stored in config.json


def test_differences_lists_every_changed_field():
    old = resolve({})
    new = resolve({"lr": 1e-3, "steps": 10, "ngf": 32, "latent": "uniform"})
    assert sorted(differences(old, new, ignore=set())) == sorted([
        "lr: 0.0002 -> 0.001", "steps: None -> 10", "ngf: 64 -> 32", "latent: 'normal' -> 'uniform'"])


def test_differences_honours_ignore():
    old = resolve({})
    new = resolve({"lr": 1e-3, "steps": 10, "ngf": 32})
    assert differences(old, new, ignore={"lr", "steps"}) == ["ngf: 64 -> 32"]
    assert differences(old, new, ignore={"ngf"}) == ["steps: None -> 10", "lr: 0.0002 -> 0.001"]


def test_no_differences_between_equal_configs():
    assert differences(resolve({"preset": "paper"}), resolve({"preset": "paper"}), ignore=set()) == []


def test_a_renamed_setting_still_reads_from_stored_runs_and_config_files(tmp_path):
    """eval_features became eval_extractor: a run or config file written before keeps its choice."""
    stored = {**resolve({}).to_dict(), "eval_features": "classifier:clf.safetensors"}
    del stored["eval_extractor"]
    assert from_dict(stored).eval_extractor == "classifier:clf.safetensors"
    (tmp_path / "c.yaml").write_text("eval_features: classifier:c.safetensors\n")
    assert read_config_file(tmp_path / "c.yaml") == {"eval_extractor": "classifier:c.safetensors"}


def test_a_runs_own_config_json_trains_a_new_run_with_the_same_settings(tmp_path):
    """`dcgan train --config RUN/config.json --out NEW`: the file a run writes reads back as settings
    (its record of the data, data_fingerprint, is not a setting), and NEW gets RUN's settings."""
    run = tmp_path / "run"
    dcgan("train", "--data", "digits", "--steps", 2, "--ngf", 8, "--ndf", 8, "--batch-size", 16,
          "--label-smoothing", 0.1, "--tensorboard", "false", "--out", run)
    stored = json.loads((run / "config.json").read_text())
    assert "data_fingerprint" in stored
    planned = json.loads(dcgan("train", "--config", run / "config.json", "--out", tmp_path / "new",
                               "--dry-run").stdout)
    planned.pop("plan")
    stored.pop("data_fingerprint")
    assert planned == {**stored, "out": str(tmp_path / "new")}
