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


def test_augmentation_semantics_and_validation_fraction_keys():
    config = Config()
    assert config.augmentation.semantics == "original" and config.data.validation_fraction == 0.1
    config = load_config(overrides=["augmentation.semantics=pil", "data.validation_fraction=0.25"])
    assert config.augmentation.semantics == "pil" and config.data.validation_fraction == 0.25
    with pytest.raises(ValueError, match=r"'augmentation.semantics' must be one of original, pil"):
        load_config(overrides=["augmentation.semantics=tf2"])
    with pytest.raises(ValueError, match=r"'data.validation_fraction' must be in \[0.0, 1.0\]"):
        load_config(overrides=["data.validation_fraction=1.5"])


def _flat_folder(root, per_class=8):
    """Class folders without train/validation subfolders (the split comes from the fraction)."""
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    for label, name in enumerate(("a", "b")):
        os.makedirs(root / name)
        for index in range(per_class):
            pixels = np.random.RandomState(10 * label + index).randint(0, 256, (40, 48, 3))
            Image.fromarray(pixels.astype("uint8")).save(root / name / f"{index}.png")
    return f"folder:{root}"


def test_config_reaches_the_input_pipeline(tmp_path):
    """data.validation_fraction reaches dataset_info and the pipelines; augmentation.semantics
    reaches preprocess_for_train (the same images as make_dataset(semantics=...) itself)."""
    import numpy as np  # noqa: PLC0415

    from keras_effnet import data  # noqa: PLC0415
    from keras_effnet.training import inputs  # noqa: PLC0415

    source = _flat_folder(tmp_path)
    base = ["model.name=efficientnet-b0", f"data.source={source}", "data.batch_size=4",
            "data.image_size=32", "augmentation.name=randaugment", "runtime.seed=3",
            "runtime.deterministic=true"]
    held_out = []
    for fraction in (0.25, 0.5):
        config = load_config(overrides=base + [f"data.validation_fraction={fraction}"])
        facts = inputs.dataset_facts(config)
        held_out.append(data.dataset_info(source, "validation",
                                          validation_fraction=fraction).num_examples)
        assert facts.num_eval_examples == held_out[-1]
        assert facts.num_train_examples == 16 - held_out[-1]
        evaluated = sum(int(labels.shape[0]) for _, labels in inputs.eval_dataset(config, 32))
        assert evaluated == held_out[-1]
    assert 0 < held_out[0] < held_out[1] < 16  # the fraction, not the default 0.1, decided

    def first_batch(semantics, direct=False):
        config = load_config(overrides=base + [f"augmentation.semantics={semantics}"])
        if direct:
            dataset = data.make_dataset(source, "train", image_size=32, batch_size=4, training=True,
                                        augment="randaugment", seed=3, deterministic=True,
                                        num_classes=2, semantics=semantics)
        else:
            dataset = inputs.train_dataset(config, 32, 2, worker_index=0, num_workers=1,
                                           num_replicas=1)
        return next(iter(dataset))[0].numpy()

    original, pil = first_batch("original"), first_batch("pil")
    np.testing.assert_array_equal(original, first_batch("original", direct=True))
    np.testing.assert_array_equal(pil, first_batch("pil", direct=True))
    assert not np.array_equal(original, pil)  # PIL rounds to uint8 where the original truncates


def test_fine_tuning_keys_and_the_small_fine_tuning_config():
    config = Config()
    assert (config.model.freeze_backbone, config.model.freeze_up_to, config.model.frozen_epochs,
            config.model.unfreeze_batch_norm, config.optimizer.layer_decay) == (
        False, None, 0.0, False, None)  # off: the published recipe trains everything
    config = load_config(overrides=["model.freeze_up_to=block5", "model.frozen_epochs=1.5",
                                    "optimizer.layer_decay=0.75"])
    assert (config.model.freeze_up_to, config.model.frozen_epochs,
            config.optimizer.layer_decay) == ("block5", 1.5, 0.75)
    # configs/finetune-small.yaml: a frozen warm-up, then the whole network, in one run
    small = load_config([os.path.join(ROOT, "configs", "finetune-small.yaml")])
    assert not small.model.freeze_backbone and small.model.new_head
    assert 0 < small.model.frozen_epochs < small.schedule.epochs
    assert small.optimizer.layer_decay is not None and not small.model.unfreeze_batch_norm


def test_config_key_reference_in_the_docs_is_current():
    from keras_effnet.discovery import config_reference  # noqa: PLC0415

    with open(os.path.join(ROOT, "docs", "training.md"), encoding="utf-8") as handle:
        assert config_reference() in handle.read(), (
            "docs/training.md's config-key reference is stale: paste "
            "`python tools/info.py --config_keys` into its 'Config keys' section")
