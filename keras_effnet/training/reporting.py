"""What a training run tells its user: console progress, a per-epoch CSV and a PNG of the curves.

``TrainingReport`` is fed by the training loop (``keras_effnet.training.loop``) and owns no
training state. The loop calls it like this (chief only: ``enabled=is_chief``)::

    report = TrainingReport(model_dir, epochs=total_epochs, steps_per_epoch=steps_per_epoch,
                            num_classes=facts.num_classes, start_step=restored_step or 0)
    for each step:
        report.step(step, loss=loss, top1=top1, lr=lr, images_per_second=images_per_sec)
        if step % steps_per_epoch == 0:
            report.epoch_end(step // steps_per_epoch, step)
        if evaluated:
            report.evaluation(step, result)      # result: top1, top5, loss, examples, ema
    report.finish(metrics)                       # metrics.json's dict; writes the summary

(``evaluation`` may come before or after ``epoch_end`` of the same epoch; an evaluation is filed
under the epoch its step ends.)

Console: in a terminal (``stream.isatty()``) a ``keras.utils.Progbar`` per epoch shows loss,
top-1, lr and images/s; otherwise (a log file, CI) one plain line per epoch and no control
characters. One line per evaluation (top-5 is left out for five classes or fewer, where it is
always 1), and a final summary naming the best top-1 and its step and where the checkpoints,
export and TensorBoard logs are.

Files, rewritten atomically at every epoch end and at the end of the run:
``summary.csv`` (one row per epoch, as timm's ``train.py`` writes: epoch, step, train_loss,
train_top1, lr, images_per_second, eval_loss, eval_top1, eval_top5) and, when matplotlib is
installed, ``curves.png`` (loss and top-1 against epoch, train and eval). A resumed run appends to
the existing CSV rows (rows of epochs after the resume point are replaced).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import sys
import time
from typing import Any, Callable, TextIO

import keras

from keras_effnet import atomic

logger = logging.getLogger(__name__)

SUMMARY_CSV = "summary.csv"
CURVES_PNG = "curves.png"
COLUMNS = ("epoch", "step", "train_loss", "train_top1", "lr", "images_per_second",
           "eval_loss", "eval_top1", "eval_top5")


class TrainingReport:
    """Console progress and per-epoch files of one run; see the module docstring for the calls.

    ``run_dir`` None writes no files. ``enabled=False`` (non-chief workers) does nothing at all.
    ``interactive`` None asks ``stream.isatty()``. ``clock`` returns seconds (injectable for tests).
    """

    def __init__(self, run_dir: str | os.PathLike | None, *, epochs: int, steps_per_epoch: int,
                 enabled: bool = True, stream: TextIO | None = None, num_classes: int | None = None,
                 start_step: int = 0, interactive: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
        self.run_dir = os.fspath(run_dir) if run_dir is not None else None
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stdout
        self.show_top5 = num_classes is None or num_classes > 5
        self.interactive = (bool(getattr(self.stream, "isatty", lambda: False)())
                            if interactive is None else interactive)
        self._clock = clock
        self._rows: dict[int, dict[str, Any]] = {}
        self._epoch_values: list[dict[str, float]] = []
        self._epoch_start = clock()
        self._progbar = None
        self.best_top1: float | None = None
        self.best_step: int | None = None
        if enabled and self.run_dir:
            self._rows = {epoch: row for epoch, row in read_summary(self.run_dir).items()
                          if row.get("step") is None or row["step"] <= start_step}

    # -- calls from the loop --------------------------------------------------------------------
    def step(self, step: int, *, loss: float, top1: float, lr: float,
             images_per_second: float) -> None:
        """One training step done (``step`` counts from 1)."""
        if not self.enabled:
            return
        values = dict(loss=float(loss), top1=float(top1), lr=float(lr),
                      images_per_second=float(images_per_second))
        self._epoch_values.append(values)
        if self.interactive:
            if self._progbar is None:
                epoch = self._epoch_of(step)
                self._write(f"Epoch {epoch}/{self.epochs}\n")
                self._progbar = keras.utils.Progbar(
                    self.steps_per_epoch, stateful_metrics=["loss", "top1", "lr", "images/s"])
            within = step - (self._epoch_of(step) - 1) * self.steps_per_epoch
            self._progbar.update(within, values=[
                ("loss", values["loss"]), ("top1", values["top1"]), ("lr", values["lr"]),
                ("images/s", values["images_per_second"])])

    def epoch_end(self, epoch: int, step: int) -> None:
        """Epoch ``epoch`` (1-based) ended at ``step``: prints its line, rewrites the CSV."""
        if not self.enabled:
            return
        values = self._epoch_values
        row = self._rows.setdefault(epoch, {})
        row.update(epoch=epoch, step=step)
        if values:
            row.update(train_loss=_mean(v["loss"] for v in values),
                       train_top1=_mean(v["top1"] for v in values),
                       lr=values[-1]["lr"],
                       images_per_second=_mean(v["images_per_second"] for v in values))
        seconds = self._clock() - self._epoch_start
        if not self.interactive and values:
            self._write(f"epoch {epoch}/{self.epochs}  step {step}  loss {row['train_loss']:.4f}  "
                        f"top-1 {row['train_top1']:.4f}  lr {row['lr']:.3g}  "
                        f"{row['images_per_second']:.1f} images/s  ({seconds:.1f} s)\n")
        self._epoch_values = []
        self._progbar = None
        self._epoch_start = self._clock()
        self._write_files(plot=False)

    def evaluation(self, step: int, metrics: dict) -> None:
        """An evaluation at ``step``: ``metrics`` has top1, loss (optional top5, examples, ema)."""
        if not self.enabled:
            return
        epoch = self._epoch_of(step)
        row = self._rows.setdefault(epoch, dict(epoch=epoch, step=step))
        row.update(eval_loss=float(metrics["loss"]), eval_top1=float(metrics["top1"]))
        if "top5" in metrics:
            row["eval_top5"] = float(metrics["top5"])
        if self.best_top1 is None or row["eval_top1"] > self.best_top1:
            self.best_top1, self.best_step = row["eval_top1"], step
        parts = [f"eval step {step} (epoch {epoch}): top-1 {row['eval_top1']:.4f}"]
        if self.show_top5 and "top5" in metrics:
            parts.append(f"top-5 {row['eval_top5']:.4f}")
        parts.append(f"loss {row['eval_loss']:.4f}")
        details = []
        if "examples" in metrics:
            details.append(f"{int(metrics['examples'])} examples")
        if metrics.get("ema"):
            details.append("EMA weights")
        self._write("  ".join(parts) + (f"  ({', '.join(details)})" if details else "") + "\n")
        self._write_files(plot=False)

    def finish(self, summary: dict) -> None:
        """The run ended: writes summary.csv and curves.png and prints the final summary.

        ``summary`` is the run's final metrics (``best_top1``, ``step``, ``top1``, ``wall_seconds``
        ... as in metrics.json); missing entries are taken from what the report saw.
        """
        if not self.enabled:
            return
        if self._epoch_values:  # a run stopped (max_steps) in the middle of an epoch
            self._epoch_end_partial(int(summary.get("step", 0)))
        written = self._write_files(plot=True)
        best = summary.get("best_top1", self.best_top1)
        lines = []
        if best is not None:
            at = f" at step {self.best_step}" if self.best_step is not None else ""
            lines.append(f"best eval top-1 {float(best):.4f}{at}")
        if "top1" in summary and "step" in summary:
            lines.append(f"final eval top-1 {float(summary['top1']):.4f} at step {summary['step']}"
                         + (f" ({float(summary['wall_seconds']):.0f} s)"
                            if "wall_seconds" in summary else ""))
        if self.run_dir:
            join = os.path.join
            lines += [f"checkpoints: {self.run_dir} (best: {join(self.run_dir, 'best')})",
                      f"export: {join(self.run_dir, 'export', 'model.keras')}",
                      f"TensorBoard: tensorboard --logdir {self.run_dir}"]
            lines += [f"{label}: {path}" for label, path in written]
        self._write("\n".join(lines) + "\n")

    # -- internals ------------------------------------------------------------------------------
    def _epoch_of(self, step: int) -> int:
        return max(1, math.ceil(step / self.steps_per_epoch))

    def _epoch_end_partial(self, step: int) -> None:
        if self._progbar is not None:
            self._write("\n")
        self.epoch_end(self._epoch_of(step) if step else len(self._rows) + 1, step)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _write_files(self, plot: bool) -> list[tuple[str, str]]:
        if not self.run_dir or not self._rows:
            return []
        written = [("per-epoch log", write_summary(self.run_dir, self._rows))]
        if plot:
            png = plot_curves(self.run_dir, self._rows)
            if png:
                written.append(("training curves", png))
        return written


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def read_summary(run_dir: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """The rows of ``run_dir/summary.csv`` by epoch ({} when there is none); numbers as floats."""
    path = os.path.join(os.fspath(run_dir), SUMMARY_CSV)
    if not os.path.exists(path):
        return {}
    rows = {}
    with open(path, newline="") as handle:
        for raw in csv.DictReader(handle):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if key in COLUMNS and value not in ("", None):
                    row[key] = int(value) if key in ("epoch", "step") else float(value)
            if "epoch" in row:
                rows[row["epoch"]] = row
    return rows


def write_summary(run_dir: str | os.PathLike, rows: dict[int, dict[str, Any]]) -> str:
    """Write ``summary.csv`` (``COLUMNS``, one row per epoch) atomically; returns its path."""
    path = os.path.join(os.fspath(run_dir), SUMMARY_CSV)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for epoch in sorted(rows):
        writer.writerow({key: _format(rows[epoch].get(key)) for key in COLUMNS})
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            handle.write(buffer.getvalue())
    return path


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def plot_curves(run_dir: str | os.PathLike, rows: dict[int, dict[str, Any]]) -> str | None:
    """Write ``curves.png`` (loss and top-1 vs epoch, train and eval); None without matplotlib."""
    try:
        from matplotlib.figure import Figure  # optional: the `plot` extra
    except ImportError:
        logger.info("matplotlib is not installed: no %s (pip install 'keras-effnet[plot]')",
                    CURVES_PNG)
        return None
    figure = Figure(figsize=(9, 3.5), dpi=100)
    for index, (metric, title) in enumerate((("loss", "loss"), ("top1", "top-1 accuracy"))):
        axes = figure.add_subplot(1, 2, index + 1)
        for split in ("train", "eval"):
            points = [(epoch, rows[epoch][f"{split}_{metric}"]) for epoch in sorted(rows)
                      if rows[epoch].get(f"{split}_{metric}") is not None]
            if points:
                axes.plot(*zip(*points), marker="o", label=split)
        axes.set_xlabel("epoch")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    path = os.path.join(os.fspath(run_dir), CURVES_PNG)
    with atomic.atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png")
    return path
