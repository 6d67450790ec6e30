"""keras_effnet.config: the typed config tree, YAML files, overrides and their errors."""

import glob
import os

import pytest
import yaml

from keras_effnet.config import Config, demo_config, load_config, parse_override

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_are_the_published_recipe():
    config = Config()
    assert config.optimizer.name == "rmsprop"
    assert config.optimizer.lr_per_256 == 0.016
    assert (config.optimizer.rho, config.optimizer.momentum, config.optimizer.epsilon) == (0.9, 0.9, 1e-3)
    assert config.optimizer.weight_decay == 1e-5
    assert config.optimizer.label_smoothing == 0.1
    assert config.optimizer.ema_decay == 0.9999
    assert (config.schedule.warmup_epochs, config.schedule.decay_rate, config.schedule.decay_epochs) == (5, 0.97, 2.4)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))))
def test_every_shipped_config_loads(path):
    config = load_config([path])
    assert config.data.batch_size > 0


def test_published_configs_match_reference_table():
    expected = {"b0": (224, 0.2), "b3": (300, 0.3), "b7": (600, 0.5), "lite4": (300, 0.3)}
    for variant, (size, dropout) in expected.items():
        config = load_config([os.path.join(ROOT, "configs", f"efficientnet-{variant}.yaml")])
        assert config.data.image_size == size and config.model.dropout_rate == dropout
        assert config.data.batch_size == 4096 and config.schedule.epochs == 350


def test_demo_yaml_equals_embedded_default():
    assert load_config([os.path.join(ROOT, "configs", "demo.yaml")]) == demo_config()


def test_later_file_wins_and_overrides_last(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("data: {batch_size: 32, source: digits}\n")
    second.write_text("data: {batch_size: 64}\n")
    config = load_config([str(first), str(second)], ["data.batch_size=128", "optimizer.weight_decay=1e-4"])
    assert config.data.batch_size == 128 and config.data.source == "digits"
    assert config.optimizer.weight_decay == pytest.approx(1e-4)  # "1e-4" is a string in YAML 1.1


def test_unknown_key_names_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optimizer:\n  lrr: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown config key 'optimizer.lrr'"):
        load_config([str(path)])
    with pytest.raises(ValueError, match=r"unknown config key 'bogus'"):
        load_config(overrides=["bogus=1"])


def test_wrong_types_and_choices_are_errors():
    with pytest.raises(ValueError, match="data.batch_size"):
        load_config(overrides=["data.batch_size=abc"])
    with pytest.raises(ValueError, match="runtime.strategy"):
        load_config(overrides=["runtime.strategy=horovod"])
    with pytest.raises(ValueError, match="must be a mapping"):
        load_config(overrides=["data=3"])
    with pytest.raises(FileNotFoundError):
        load_config(["/nonexistent/config.yaml"])


def test_parse_override_and_yaml_round_trip():
    assert parse_override("model.phi=-4") == {"model": {"phi": -4}}
    assert parse_override("model.weights=") == {"model": {"weights": None}}
    with pytest.raises(ValueError):
        parse_override("no_equals_sign")
    config = load_config(overrides=["model.phi=-4", "runtime.max_steps=3"])
    assert Config.from_dict(yaml.safe_load(config.to_yaml())) == config
