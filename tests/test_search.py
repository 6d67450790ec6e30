"""keras_effnet.search: the alpha-beta-gamma grid search and the scaling curves, with restarts.

Most tests inject a fake ``train_fn`` (instant, deterministic); ``test_end_to_end_on_digits``
trains with keras_effnet.training on the embedded dataset with a budget of two steps.
"""

import csv
import dataclasses
import json
import os

import pytest

from keras_effnet import scaling, search
from keras_effnet.config import demo_config, merge
from keras_effnet.flops import count_spec_flops
from helpers import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_baseline():
    """Compound phi=-8 from B0 at 32 px: 7 blocks, the cheapest member that still trains."""
    return dataclasses.replace(scaling.compound_spec(-8.0), resolution=32)


class FakeTrainer:
    """Accuracy grows with FLOPs; records every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, spec, budget, run_dir):
        self.calls.append((spec.name, budget, run_dir))
        flops = count_spec_flops(spec).flops
        return dict(val_accuracy=min(0.99, flops / 1e8), val_loss=1.0, steps=budget,
                    wall_seconds=0.0)


def png_ok(path):
    with open(path, "rb") as stream:
        return stream.read(8) == PNG_MAGIC and os.path.getsize(path) > 5000


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_coefficient_grid_holds_the_paper_choice():
    grid = search.coefficient_grid(target=2.0, tolerance=0.1, step=0.05)
    assert (1.2, 1.1, 1.15) in grid
    assert all(min(c) >= 1.0 and abs(c[0] * c[1] ** 2 * c[2] ** 2 - 2.0) <= 0.1 + 1e-9
               for c in grid)
    assert grid == sorted(grid) and len(grid) == len(set(grid))
    assert len(search.coefficient_grid(tolerance=0.02, step=0.1)) < len(grid)
    with pytest.raises(ValueError, match="widen the tolerance"):
        search.coefficient_grid(target=2.0, tolerance=0.0, step=0.5, maximum=1.2)
    with pytest.raises(ValueError, match="step"):
        search.coefficient_grid(step=0)


GRID = [(1.2, 1.1, 1.15), (1.0, 1.4, 1.0), (1.9, 1.0, 1.0), (1.0, 1.0, 1.4)]


def test_grid_search_ranks_writes_and_resumes(tmp_path):
    baseline = scaling.get_spec("b0")
    trainer = FakeTrainer()
    out = str(tmp_path / "grid")
    ranked = search.grid_search(baseline, trainer, out, budget=5, candidates=GRID,
                                log=lambda _: None)
    assert len(trainer.calls) == 4 and {c[1] for c in trainer.calls} == {5}
    accuracies = [r["val_accuracy"] for r in ranked]
    assert accuracies == sorted(accuracies, reverse=True)
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4]
    top = ranked[0]
    spec = scaling.scale_spec(baseline, 1.0, top["alpha"], top["beta"], top["gamma"],
                              resolution_divisor=1)
    assert top["flops"] == count_spec_flops(spec).flops
    assert top["flops_ratio"] == pytest.approx(top["flops"] / count_spec_flops(baseline).flops)

    rows = read_csv(os.path.join(out, "results.csv"))
    assert [r["key"] for r in rows] == [r["key"] for r in ranked]
    assert {"alpha", "beta", "gamma", "product", "flops", "params", "val_accuracy"} <= set(rows[0])
    assert float(rows[0]["val_accuracy"]) == pytest.approx(accuracies[0])
    with open(os.path.join(out, "results.json"), encoding="utf-8") as stream:
        assert [r["key"] for r in json.load(stream)] == [r["key"] for r in ranked]
    assert png_ok(os.path.join(out, "grid_search.png"))

    # Restart: nothing to do; then lose one result and only that one is retrained.
    search.grid_search(baseline, trainer, out, budget=5, candidates=GRID, log=lambda _: None)
    assert len(trainer.calls) == 4
    os.remove(os.path.join(out, "results", "a1_b1.4_g1.json"))
    again = search.grid_search(baseline, trainer, out, budget=5, candidates=GRID,
                               log=lambda _: None)
    assert len(trainer.calls) == 5 and trainer.calls[-1][2].endswith("a1_b1.4_g1")
    assert [r["key"] for r in again] == [r["key"] for r in ranked]

    # A different budget or baseline in the same directory is refused.
    with pytest.raises(ValueError, match="budget"):
        search.grid_search(baseline, trainer, out, budget=6, candidates=GRID, log=lambda _: None)


def test_identical_architectures_are_trained_once(tmp_path):
    # On a tiny baseline, depth 1.0 vs 1.05 rounds to the same repeats: one training, shared.
    trainer = FakeTrainer()
    ranked = search.grid_search(tiny_baseline(), trainer, str(tmp_path), budget=1,
                                candidates=[(1.0, 1.0, 1.0), (1.05, 1.0, 1.0)], log=lambda _: None)
    assert len(trainer.calls) == 1
    shared = next(r for r in ranked if r["key"] == "a1.05_b1_g1")
    assert shared["same_as"] == "a1_b1_g1"
    original = next(r for r in ranked if r["key"] == "a1_b1_g1")
    assert shared["val_accuracy"] == original["val_accuracy"]


def test_interrupted_or_bad_training_records_nothing(tmp_path):
    def interrupted(spec, budget, run_dir):
        return dict(interrupted=True)

    with pytest.raises(search.CandidateInterrupted, match="rerun"):
        search.grid_search(tiny_baseline(), interrupted, str(tmp_path), budget=1,
                           candidates=[(1.2, 1.1, 1.15)], log=lambda _: None)
    assert os.listdir(tmp_path / "results") == []
    with pytest.raises(ValueError, match="val_accuracy"):
        search.grid_search(tiny_baseline(), lambda *a: {"top1": 0.5}, str(tmp_path), budget=1,
                           candidates=[(1.2, 1.1, 1.15)], log=lambda _: None)
    trainer = FakeTrainer()
    search.grid_search(tiny_baseline(), trainer, str(tmp_path), budget=1,
                       candidates=[(1.2, 1.1, 1.15)], log=lambda _: None)
    assert len(trainer.calls) == 1


@pytest.mark.parametrize("method", search.METHODS)
def test_solve_for_flops_moves_one_dimension(method):
    base = scaling.get_spec("b0")
    coefficient, spec = search.solve_for_flops(base, method, 4.0)
    ratio = count_spec_flops(spec).flops / count_spec_flops(base).flops
    assert ratio == pytest.approx(4.0, rel=0.1)
    changed = {k for k in ("width", "depth", "resolution") if getattr(spec, k) != getattr(base, k)}
    assert changed == ({"width", "depth", "resolution"} if method == "compound" else {method})
    assert coefficient > (0.0 if method == "compound" else 1.0)


def test_scaling_curves_write_plot_and_data_and_resume(tmp_path):
    trainer = FakeTrainer()
    out = str(tmp_path / "curves")
    rows = search.scaling_curves(tiny_baseline(), trainer, out, budget=3, flops_targets=(2, 4),
                                 log=lambda _: None)
    assert len(trainer.calls) == 1 + 4 * 2  # the baseline is trained once for all curves
    assert [(r["method"], r["target_ratio"]) for r in rows[:3]] == [
        ("width", 1.0), ("width", 2.0), ("width", 4.0)]
    assert {r["method"] for r in rows} == set(search.METHODS)
    data = read_csv(os.path.join(out, "scaling_curves.csv"))
    assert len(data) == 4 * 3
    assert {"method", "flops", "val_accuracy", "coefficient", "width", "depth",
            "resolution"} <= set(data[0])
    assert float(data[1]["flops"]) == rows[1]["flops"]
    assert png_ok(os.path.join(out, "scaling_curves.png"))
    with open(os.path.join(out, "scaling_curves.json"), encoding="utf-8") as stream:
        assert len(json.load(stream)) == 12

    os.remove(os.path.join(out, "results", "depth_x4.json"))
    search.scaling_curves(tiny_baseline(), trainer, out, budget=3, flops_targets=(2, 4),
                          log=lambda _: None)
    assert len(trainer.calls) == 10 and trainer.calls[-1][2].endswith("depth_x4")
    with pytest.raises(ValueError, match="unknown scaling method"):
        search.scaling_curves(tiny_baseline(), trainer, out, budget=3, methods=("height",))


def test_candidate_config_expresses_the_spec():
    from keras_effnet.config import resolve_spec

    config = demo_config()
    baseline = search.baseline_from_config(config)
    spec = scaling.scale_spec(baseline, 1.0, 1.2, 1.1, 1.15, resolution_divisor=1)
    candidate = search.candidate_config(config, spec, budget=7, run_dir="/tmp/run")
    resolved = resolve_spec(candidate.model)
    assert (resolved.width, resolved.depth, resolved.resolution) == (
        spec.width, spec.depth, spec.resolution)
    assert candidate.data.image_size == spec.resolution == 37
    assert candidate.runtime.steps_per_epoch == 7 and candidate.schedule.epochs == 1.0
    assert candidate.runtime.model_dir == "/tmp/run"
    assert candidate.schedule.warmup_epochs == pytest.approx(
        config.schedule.warmup_epochs / config.schedule.epochs)
    assert config.runtime.model_dir is None  # the base config is untouched
    user = scaling.spec_from_blocks(["r1_k3_s11_e1_i32_o16"], resolution=32)
    with pytest.raises(ValueError, match="cannot express"):
        search.candidate_config(config, user, 1, "/tmp/run")




def test_tools_parse_flags_and_call_the_library(tmp_path, monkeypatch, capsys):
    trainer = FakeTrainer()
    seen = []

    def fake_trainer_fn(config):
        seen.append(config)
        return trainer

    monkeypatch.setattr(search, "trainer_train_fn", fake_trainer_fn)
    common = ["--set=model.phi=-8", "--set=data.batch_size=8", "--steps=2"]
    assert run_cli("grid_search", common + [f"--out_dir={tmp_path / 'g'}",
                                             "--candidates=1.2:1.1:1.15,1:1.4:1"]) == 0
    assert seen[0].model.phi == -8 and seen[0].data.source == "digits"
    assert len(trainer.calls) == 2 and "rank" in capsys.readouterr().out
    assert run_cli("scaling_curves", common + [f"--out_dir={tmp_path / 'c'}",
                                                "--flops_targets=2", "--methods=width"]) == 0
    assert len(trainer.calls) == 4 and os.path.exists(tmp_path / "c" / "scaling_curves.png")
    assert run_cli("grid_search", common + [f"--out_dir={tmp_path / 'g'}",
                                             "--candidates=1.2:1.1"]) == 1
    assert "alpha:beta:gamma" in capsys.readouterr().err


@pytest.mark.slow
def test_end_to_end_on_digits(tmp_path):
    """Real training (2 steps per model) on the embedded dataset; restart retrains only the lost."""
    config = merge(demo_config(), {
        "model": {"phi": -8.0},
        "data": {"batch_size": 8, "eval_batch_size": 40, "data_dir": str(tmp_path / "tfds")},
        "runtime": {"eval_steps": 1}})
    baseline = search.baseline_from_config(config)
    real = search.trainer_train_fn(config)
    calls = []

    def counted(spec, budget, run_dir):
        calls.append(os.path.basename(run_dir))
        return real(spec, budget, run_dir)

    settings = search.config_settings(config)
    grid_dir = str(tmp_path / "grid")
    candidates = [(1.0, 1.0, 1.2), (1.0, 1.4, 1.0)]
    ranked = search.grid_search(baseline, counted, grid_dir, budget=2, candidates=candidates,
                                settings=settings, log=lambda _: None)
    assert sorted(calls) == ["a1_b1.4_g1", "a1_b1_g1.2"]
    assert all(0.0 <= r["val_accuracy"] <= 1.0 and r["steps"] == 2 for r in ranked)
    assert os.path.exists(os.path.join(grid_dir, "runs", "a1_b1_g1.2", "metrics.json"))
    os.remove(os.path.join(grid_dir, "results", "a1_b1.4_g1.json"))
    search.grid_search(baseline, counted, grid_dir, budget=2, candidates=candidates,
                       settings=settings, log=lambda _: None)
    assert calls[2:] == ["a1_b1.4_g1"]
    assert png_ok(os.path.join(grid_dir, "grid_search.png"))
    assert len(read_csv(os.path.join(grid_dir, "results.csv"))) == 2

    curves_dir = str(tmp_path / "curves")
    rows = search.scaling_curves(baseline, counted, curves_dir, budget=2, flops_targets=(2,),
                                 methods=("resolution",), settings=settings, log=lambda _: None)
    assert calls[3:] == ["baseline", "resolution_x2"]
    assert [r["method"] for r in rows] == ["resolution", "resolution"]
    assert png_ok(os.path.join(curves_dir, "scaling_curves.png"))
    assert len(read_csv(os.path.join(curves_dir, "scaling_curves.csv"))) == 2
