"""Training: a custom loop on ``tf.distribute`` with the published recipe.

``train(config)`` trains, checkpoints, evaluates with the EMA weights and writes the run directory
(``keras_effnet.run_dir``); ``evaluate_checkpoint(config, checkpoint)`` reports top-1/top-5 of a
checkpoint; ``load_run_model(run_dir)`` is the model of a run for evaluation, export and
prediction. See docs/training.md for the recipe and the choices made.

Modules: ``task`` (network, optimiser, loss, replica steps), ``loop`` (the ``Trainer``),
``checkpoints``, ``guards`` (run lock, resume and divergence checks), ``inputs`` (dataset facts and pipelines), ``run_files`` (run-directory writing,
``load_run_model``), ``evaluation``.
"""

from keras_effnet.training.checkpoints import RunCheckpoints, check_writable
from keras_effnet.training.evaluation import (
    evaluate_checkpoint, evaluate_loaded, evaluator, follow_checkpoints)
from keras_effnet.training.guards import RunLock, RunLocked, TrainingDiverged
from keras_effnet.training.inputs import dataset_facts
from keras_effnet.training.loop import Trainer, train
from keras_effnet.training.run_files import load_run_model, run_config
from keras_effnet.training.task import DatasetFacts, TrainingStopped, TrainingTask

__all__ = [
    "DatasetFacts", "RunCheckpoints", "RunLock", "RunLocked", "Trainer", "TrainingDiverged",
    "TrainingStopped", "TrainingTask",
    "check_writable", "dataset_facts", "evaluate_checkpoint", "evaluate_loaded", "evaluator",
    "follow_checkpoints", "load_run_model", "run_config", "train",
]
