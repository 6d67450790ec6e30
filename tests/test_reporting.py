"""keras_effnet.training.reporting: console lines, summary.csv and curves.png of a run."""

import io
import os

import pytest

from keras_effnet.training.reporting import CURVES_PNG, SUMMARY_CSV, TrainingReport, read_summary


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def _run(report, epochs=2, steps_per_epoch=3, eval_every=1):
    step = 0
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            step += 1
            report.step(step, loss=2.0 / step, top1=0.1 * step, lr=0.01, images_per_second=100.0)
        report.epoch_end(epoch, step)
        if epoch % eval_every == 0:
            report.evaluation(step, dict(top1=0.5 + 0.1 * epoch, top5=1.0, loss=1.0 / epoch,
                                         examples=8, ema=True))
    report.finish(dict(top1=0.7, step=step, wall_seconds=3.0))
    return step


def test_plain_lines_when_not_a_terminal(tmp_path):
    stream = io.StringIO()
    report = TrainingReport(tmp_path, epochs=2, steps_per_epoch=3, stream=stream, num_classes=4,
                            clock=FakeClock())
    _run(report)
    text = stream.getvalue()
    assert "\r" not in text and "\b" not in text and "\x1b" not in text
    lines = text.splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    assert epoch_lines[0].startswith("epoch 1/2  step 3  loss ")
    eval_lines = [line for line in lines if line.startswith("eval step")]
    assert eval_lines == [
        "eval step 3 (epoch 1): top-1 0.6000  loss 1.0000  (8 examples, EMA weights)",
        "eval step 6 (epoch 2): top-1 0.7000  loss 0.5000  (8 examples, EMA weights)"]
    assert "best eval top-1 0.7000 at step 6" in text
    assert f"tensorboard --logdir {tmp_path}" in text
    assert os.path.join(str(tmp_path), "export", "model.keras") in text
    assert len(lines) <= 12


def test_top5_shown_for_many_classes(tmp_path):
    stream = io.StringIO()
    report = TrainingReport(None, epochs=1, steps_per_epoch=1, stream=stream, num_classes=10)
    report.step(1, loss=1.0, top1=0.5, lr=0.1, images_per_second=1.0)
    report.epoch_end(1, 1)
    report.evaluation(1, dict(top1=0.5, top5=0.9, loss=1.0))
    assert "top-5 0.9000" in stream.getvalue()


def test_summary_csv_rows_and_curves(tmp_path):
    report = TrainingReport(tmp_path, epochs=4, steps_per_epoch=2, stream=io.StringIO(),
                            clock=FakeClock())
    _run(report, epochs=4, steps_per_epoch=2, eval_every=2)
    rows = read_summary(tmp_path)
    assert sorted(rows) == [1, 2, 3, 4]
    assert rows[1]["step"] == 2 and rows[1]["train_loss"] == pytest.approx((2.0 + 1.0) / 2)
    assert "eval_top1" not in rows[1] and rows[2]["eval_top1"] == pytest.approx(0.7)
    header = (tmp_path / SUMMARY_CSV).read_text().splitlines()[0]
    assert header == "epoch,step,train_loss,train_top1,lr,images_per_second,eval_loss,eval_top1,eval_top5"
    pytest.importorskip("matplotlib")
    png = (tmp_path / CURVES_PNG).read_bytes()
    assert png.startswith(b"\x89PNG")


def test_resume_keeps_earlier_rows(tmp_path):
    first = TrainingReport(tmp_path, epochs=3, steps_per_epoch=2, stream=io.StringIO())
    for step in (1, 2, 3, 4):
        first.step(step, loss=1.0, top1=0.5, lr=0.1, images_per_second=1.0)
        if step % 2 == 0:
            first.epoch_end(step // 2, step)
    # resumed from the checkpoint at step 2: epoch 2's row (step 4) is redone
    second = TrainingReport(tmp_path, epochs=3, steps_per_epoch=2, stream=io.StringIO(),
                            start_step=2)
    for step in (3, 4, 5, 6):
        second.step(step, loss=0.5, top1=0.9, lr=0.1, images_per_second=1.0)
        if step % 2 == 0:
            second.epoch_end(step // 2, step)
    second.finish(dict(step=6))
    rows = read_summary(tmp_path)
    assert sorted(rows) == [1, 2, 3]
    assert rows[1]["train_loss"] == 1.0 and rows[2]["train_loss"] == 0.5


def test_progress_bar_in_a_terminal(tmp_path, capsys):
    report = TrainingReport(None, epochs=1, steps_per_epoch=2, interactive=True,
                            stream=io.StringIO())
    report.step(1, loss=1.0, top1=0.5, lr=0.1, images_per_second=10.0)
    report.step(2, loss=1.0, top1=0.5, lr=0.1, images_per_second=10.0)
    report.epoch_end(1, 2)
    assert "Epoch 1/1" in report.stream.getvalue()
    assert not [line for line in report.stream.getvalue().splitlines() if line.startswith("epoch ")]


def test_disabled_does_nothing(tmp_path):
    stream = io.StringIO()
    report = TrainingReport(tmp_path, epochs=1, steps_per_epoch=1, enabled=False, stream=stream)
    _run(report, epochs=1, steps_per_epoch=1)
    assert stream.getvalue() == "" and not os.listdir(tmp_path)


def test_partial_epoch_at_finish(tmp_path):
    report = TrainingReport(tmp_path, epochs=2, steps_per_epoch=4, stream=io.StringIO())
    for step in (1, 2, 3):
        report.step(step, loss=1.0, top1=0.5, lr=0.1, images_per_second=1.0)
    report.evaluation(3, dict(top1=0.25, loss=2.0))
    report.finish(dict(step=3, top1=0.25))
    rows = read_summary(tmp_path)
    assert rows[1]["step"] == 3 and rows[1]["eval_top1"] == 0.25
