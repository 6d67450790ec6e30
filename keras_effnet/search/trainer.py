"""The real ``train_fn`` of the search: each candidate trained by ``keras_effnet.training.train``."""

from __future__ import annotations

import dataclasses

from keras_effnet import training
from keras_effnet.config import resolve_spec
from keras_effnet.scaling import ModelSpec
from keras_effnet.search.store import TrainFn, architecture_signature


def candidate_config(base_config, spec: ModelSpec, budget: int, run_dir: str):
    """The training ``Config`` for one candidate: ``base_config`` with the candidate's width, depth
    and resolution, ``budget`` steps (one "epoch" of that many steps, so the schedule spans the
    budget) and ``run_dir`` as model_dir.

    The warm-up keeps its share of the run. Raises ValueError when the trainer's model config
    cannot express ``spec`` (a custom block table): pass your own ``train_fn`` then.
    """
    model = dataclasses.replace(base_config.model, phi=None, width=spec.width, depth=spec.depth,
                                resolution=spec.resolution)
    expressed = resolve_spec(model)
    if architecture_signature(dataclasses.replace(expressed, dropout=spec.dropout)) \
            != architecture_signature(spec):
        raise ValueError(f"the trainer's model config (name={model.name!r} with width/depth/"
                         f"resolution overrides) cannot express {spec.name}; scale a published "
                         "variant, or pass a train_fn that builds custom block tables")
    schedule = base_config.schedule
    warmup_share = min(1.0, schedule.warmup_epochs / schedule.epochs) if schedule.epochs else 0.0
    return dataclasses.replace(
        base_config,
        model=model,
        data=dataclasses.replace(base_config.data, image_size=spec.resolution),
        schedule=dataclasses.replace(schedule, epochs=1.0, warmup_epochs=warmup_share),
        runtime=dataclasses.replace(base_config.runtime, model_dir=run_dir, steps_per_epoch=budget,
                                    max_steps=None, eval_every_epochs=1,
                                    checkpoint_every_steps=0, progress_bar=False),
    )


def trainer_train_fn(base_config, **train_kwargs) -> TrainFn:
    """A ``train_fn`` that trains each candidate with ``keras_effnet.training.train``.

    ``base_config`` (a ``keras_effnet.config.Config``) sets dataset, optimiser and schedule shape;
    ``train_kwargs`` pass to ``training.train`` (e.g. ``strategy``).
    """

    def train_fn(spec: ModelSpec, budget: int, run_dir: str) -> dict:
        config = candidate_config(base_config, spec, budget, run_dir)
        try:
            metrics = training.train(config, **train_kwargs)
        except training.TrainingStopped as error:
            # A diverging candidate is a result (ranked last), not the end of the search.
            return dict(val_accuracy=0.0, error=str(error))
        if metrics.get("interrupted"):
            return dict(interrupted=True)
        return dict(val_accuracy=float(metrics["top1"]), val_top5=float(metrics["top5"]),
                    val_loss=float(metrics["eval_loss"]), steps=int(metrics["step"]),
                    wall_seconds=float(metrics["wall_seconds"]),
                    eval_examples=int(metrics["eval_examples"]))

    return train_fn


def baseline_from_config(config) -> ModelSpec:
    """The baseline ``ModelSpec`` of a training config (variant or compound phi, overrides, and
    ``data.image_size`` as its resolution when set)."""
    spec = resolve_spec(config.model)
    if config.data.image_size:
        spec = dataclasses.replace(spec, resolution=int(config.data.image_size))
    if config.model.dropout_rate is not None:
        spec = dataclasses.replace(spec, dropout=config.model.dropout_rate)
    return spec


def config_settings(config) -> dict:
    """The parts of a training config a restarted study must keep (all but the run directory)."""
    values = config.to_dict()
    values["runtime"] = {k: v for k, v in values["runtime"].items()
                         if k not in ("model_dir", "progress_bar", "log_every_steps")}
    return {"training_config": values}
