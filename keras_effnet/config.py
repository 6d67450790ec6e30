"""The typed configuration tree of a training or evaluation job.

One ``Config`` (model, data, augmentation, optimizer, schedule, runtime) is loaded from YAML files
(later files win), then ``section.key=value`` overrides. Unknown keys and values of the wrong type
are errors that name the key. The defaults of the dataclasses are the published ImageNet recipe for
B0 (Tan & Le 2019, "EfficientNet", section 5.2; tensorflow/tpu ``models/official/efficientnet/main.py``).
``demo_config()`` is the embedded default job (``configs/demo.yaml``, shipped as package data).
``resolve_spec`` and ``image_size_for`` turn a config into the architecture and image size.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from importlib import resources
from typing import Any, Union

import yaml

from keras_effnet import scaling

# EfficientNet downsamples 32x: smaller inputs leave no spatial extent.
MIN_IMAGE_SIZE = 32


@dataclasses.dataclass
class ModelConfig:
    """Which network to train.

    ``name`` is a published variant (``efficientnet-b0``, ``b3``, ``lite0`` ...). ``phi`` instead
    scales B0 by the compound rule (``scaling.compound_spec``); ``width``/``depth``/``resolution``
    override single coefficients of either. ``weights`` initialises the backbone from a named weight
    set or a ``.weights.h5``/``.keras`` file; with ``new_head`` the classifier is re-initialised for
    ``num_classes`` (fine-tuning). ``num_classes`` defaults to the dataset's.

    Freezing (``keras_effnet.finetune.freeze``; frozen batch norm runs in inference mode):
    ``freeze_backbone`` trains only what follows ``freeze_up_to`` for the whole run;
    ``frozen_epochs`` > 0 freezes it for that many epochs (a head warm-up) and then trains the
    whole network, with the frozen batch norm kept in inference mode unless
    ``unfreeze_batch_norm``. ``freeze_up_to``: ``stem``, ``block1`` .. ``block7`` or ``top``;
    None freezes everything but the classifier.
    """

    name: str = "efficientnet-b0"
    phi: float | None = None
    width: float | None = None
    depth: float | None = None
    resolution: int | None = None
    dropout_rate: float | None = None
    stochastic_depth_rate: float = 0.2
    num_classes: int | None = None
    weights: str | None = None
    new_head: bool = False
    freeze_backbone: bool = False
    freeze_up_to: str | None = None
    frozen_epochs: float = 0.0
    unfreeze_batch_norm: bool = False
    sync_batch_norm: bool = False


@dataclasses.dataclass
class DataConfig:
    """Input pipeline (``keras_effnet.data.make_dataset``). ``batch_size`` is GLOBAL (all replicas).

    ``validation_fraction``: for a ``folder:`` source without ``train``/``validation`` subfolders,
    the share of files (chosen by a hash of the path) that form the validation split.
    """

    source: str = "tfds:imagenet2012"
    train_split: str = "train"
    eval_split: str = "validation"
    data_dir: str | None = None
    image_size: int | None = None
    batch_size: int = 4096
    eval_batch_size: int | None = None
    cache: bool = False
    num_train_examples: int | None = None
    validation_fraction: float = 0.1


@dataclasses.dataclass
class AugmentationConfig:
    """Training augmentation: ``name`` is ``autoaugment``, ``randaugment`` or ``none``.

    ``semantics``: ``original`` computes every op and the uint8 conversion as tensorflow/tpu
    ``efficientnet/autoaugment.py`` and ``preprocessing.py`` (the published checkpoints);
    ``pil`` as the PIL ops the policies were searched with (docs/fidelity.md).
    """

    name: str = "autoaugment"
    randaugment_layers: int = 2
    randaugment_magnitude: int = 10
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    semantics: str = "original"


@dataclasses.dataclass
class OptimizerConfig:
    """Optimiser, loss and EMA.

    ``name``: ``rmsprop`` (TF1 semantics, the recipe), ``sgd`` (Nesterov momentum) or ``adam``.
    ``lr_per_256``: learning rate for a global batch of 256; the trainer scales it linearly.
    ``weight_decay``: coefficient of the explicit L2 term ``wd * sum(w**2) / 2`` over non-BN weights.
    ``ema_decay``: 0 disables the EMA; ``ema_warmup`` uses ``min(decay, (1 + t) / (10 + t))``.
    ``layer_decay``: layer-wise learning-rate decay in (0, 1] (BEiT, timm's ``layer_decay``): the
    classifier gets the full rate, each block below it ``layer_decay`` times the one above
    (``keras_effnet.finetune.layer_decay_multipliers``); None is off.
    """

    name: str = "rmsprop"
    lr_per_256: float = 0.016
    rho: float = 0.9
    momentum: float = 0.9
    epsilon: float = 1e-3
    weight_decay: float = 1e-5
    weight_decay_biases: bool = True
    label_smoothing: float = 0.1
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    clipnorm: float | None = None
    layer_decay: float | None = None


@dataclasses.dataclass
class ScheduleConfig:
    """Learning-rate schedule in epochs. ``decay``: ``exponential`` (the recipe), ``cosine``, ``constant``."""

    epochs: float = 350.0
    warmup_epochs: float = 5.0
    decay: str = "exponential"
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    staircase: bool = True
    min_lr: float = 0.0


@dataclasses.dataclass
class RuntimeConfig:
    """Where and how the job runs, checkpoints and logs.

    ``strategy``: ``default``, ``one_device``, ``mirrored``, ``multi_worker_mirrored`` or ``tpu``.
    ``cpu_devices``: split the CPU into this many logical devices (mirrored strategy without GPUs;
    tests). ``checkpoint_every_steps``: 0 saves only at epoch ends. ``max_steps`` stops early (smoke tests).
    ``gradient_checkpointing`` recomputes each block in the backward pass (``keras_effnet.remat``):
    results unchanged, far fewer activations kept (a third less peak memory for B0 at 224), about
    0.65x the training speed on CPU; a run may be resumed with it switched on or off.
    """

    model_dir: str | None = None
    strategy: str = "default"
    tpu: str | None = None
    num_gpus: int | None = None
    cpu_devices: int | None = None
    mixed_precision: str = "float32"
    jit_compile: bool = False
    seed: int | None = 0
    deterministic: bool = False
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 3
    eval_every_epochs: int = 1
    log_every_steps: int = 100
    steps_per_epoch: int | None = None
    eval_steps: int | None = None
    max_steps: int | None = None
    progress_bar: bool = True
    gradient_checkpointing: bool = False


@dataclasses.dataclass
class Config:
    """A whole job: ``Config.from_dict``/``load_config`` validate every key and type."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    augmentation: AugmentationConfig = dataclasses.field(default_factory=AugmentationConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        return merge(cls(), values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


CHOICES = {
    "augmentation.name": ("autoaugment", "randaugment", "none"),
    "augmentation.semantics": ("original", "pil"),
    "optimizer.name": ("rmsprop", "sgd", "adam"),
    "schedule.decay": ("exponential", "cosine", "constant"),
    "runtime.strategy": ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu"),
    "runtime.mixed_precision": ("float32", "mixed_float16", "mixed_bfloat16"),
}
# Keys whose value must lie in [low, high].
RANGES = {"data.validation_fraction": (0.0, 1.0)}


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field annotation, converting the safe cases (int->float, '1e-5')."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ValueError as error:
                errors.append(error)
        raise errors[0]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported annotation {annotation} for {key}")
    name = getattr(annotation, "__name__", str(annotation))
    raise ValueError(f"config key '{key}' expects {name}, got {value!r}")


def merge(config: Any, values: dict, prefix: str = "") -> Any:
    """A copy of dataclass ``config`` with ``values`` (a nested dict) applied, validated."""
    if values is None:
        return config
    if not isinstance(values, dict):
        raise ValueError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, "
                         f"got {values!r}")
    types_ = _field_types(type(config))
    updates = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in types_:
            known = ", ".join(f"{prefix}{k}" for k in types_)
            raise ValueError(f"unknown config key '{full}'; known keys here: {known}")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            updates[key] = merge(current, value, prefix=f"{full}.")
        else:
            updates[key] = _coerce(value, types_[key], full)
            choices = CHOICES.get(full)
            if choices is not None and updates[key] not in choices:
                raise ValueError(f"config key '{full}' must be one of {', '.join(choices)}, "
                                 f"got {updates[key]!r}")
            low, high = RANGES.get(full, (None, None))
            if low is not None and not low <= updates[key] <= high:
                raise ValueError(f"config key '{full}' must be in [{low}, {high}], "
                                 f"got {updates[key]!r}")
    return dataclasses.replace(config, **updates)


def parse_override(text: str) -> dict:
    """``"optimizer.lr_per_256=0.02"`` -> ``{"optimizer": {"lr_per_256": 0.02}}`` (value as YAML)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ValueError(f"override {text!r}: the value {raw!r} is not valid YAML; quote "
                         "strings with special characters") from None
    nested: dict = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def load_yaml(path: str) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    with open(path, encoding="utf-8") as handle:
        try:
            values = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ValueError(f"config file {path!r} is not valid YAML{where} "
                             f"({getattr(error, 'problem', None) or error}); fix the syntax "
                             "there") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path!r} must hold a mapping at the top level")
    return values


def load_config(paths: list[str] | tuple[str, ...] | str | None = None,
                overrides: list[str] | tuple[str, ...] | None = None,
                base: Config | None = None) -> Config:
    """Defaults (or ``base``), then each YAML file in order, then ``key=value`` overrides.

    Errors name the file and the offending key.
    """
    config = base or Config()
    if isinstance(paths, str):
        paths = [paths]
    for path in paths or []:
        try:
            config = merge(config, load_yaml(path))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    for text in overrides or []:
        try:
            config = merge(config, parse_override(text))
        except ValueError as error:
            raise ValueError(f"--set {text}: {error}") from None
    return config


def demo_config() -> Config:
    """The embedded default job: ``keras_effnet/resources/demo.yaml`` (= ``configs/demo.yaml``),
    a small EfficientNet (compound phi=-4 at 32 px) on the embedded 8x8 digits, upsampled."""
    text = resources.files("keras_effnet").joinpath("resources/demo.yaml").read_text(encoding="utf-8")
    return Config.from_dict(yaml.safe_load(text))


def resolve_spec(model: ModelConfig) -> scaling.ModelSpec:
    """The ``ModelSpec`` a ``ModelConfig`` describes (variant or compound phi, then overrides)."""
    base = scaling.get_spec(model.name)
    spec = scaling.compound_spec(model.phi, base=base) if model.phi is not None else base
    changes = {key: getattr(model, key) for key in ("width", "depth", "resolution")
               if getattr(model, key) is not None}
    return dataclasses.replace(spec, **changes) if changes else spec


def image_size_for(config: Config) -> int:
    """The training/eval image side: ``data.image_size`` or the variant's resolution."""
    spec = resolve_spec(config.model)
    size = config.data.image_size or spec.resolution
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"image size {size} is too small for {spec.name}: EfficientNet "
                         f"downsamples 32x, use data.image_size >= {MIN_IMAGE_SIZE}")
    if (config.data.image_size and config.model.resolution
            and config.data.image_size != config.model.resolution):
        raise ValueError(f"data.image_size={config.data.image_size} does not match "
                         f"model.resolution={config.model.resolution} of the variant; set one "
                         "of them (or both to the same value)")
    return size
