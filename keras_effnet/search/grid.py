"""Step 1 of compound scaling (paper section 3.3): the alpha-beta-gamma grid search."""

from __future__ import annotations

import logging
import math
import os
from typing import Callable, Sequence

from keras_effnet import atomic, scaling
from keras_effnet.flops import count_spec_flops
from keras_effnet.scaling import ModelSpec
from keras_effnet.search.store import ResultStore, TrainFn, pyplot, run_candidates, spec_summary, write_csv

logger = logging.getLogger(__name__)


def coefficient_grid(target: float = 2.0, tolerance: float = 0.1, step: float = 0.05,
                     maximum: float = 2.0,
                     minimum: float = 1.0) -> list[tuple[float, float, float]]:
    """All (alpha, beta, gamma) in ``[minimum, maximum]`` on a ``step`` grid with
    ``|alpha * beta**2 * gamma**2 - target| <= tolerance`` (paper eq. 3: alpha, beta, gamma >= 1).

    Sorted by alpha, beta, gamma. The paper's (1.2, 1.1, 1.15) is on the 0.05 grid (product 1.92).
    """
    if step <= 0 or tolerance < 0 or target <= 0:
        raise ValueError(f"step and target must be positive and tolerance >= 0, got step={step}, "
                         f"target={target}, tolerance={tolerance}")
    if minimum < 1 or maximum < minimum:
        raise ValueError(f"need 1 <= minimum <= maximum, got minimum={minimum}, maximum={maximum}")
    count = int(math.floor((maximum - minimum) / step + 1e-9)) + 1
    decimals = max(0, -int(math.floor(math.log10(step))) + 2)
    values = [round(minimum + i * step, decimals) for i in range(count)]
    grid = [(a, b, g) for a in values for b in values for g in values
            if abs(a * b * b * g * g - target) <= tolerance + 1e-12]
    if not grid:
        raise ValueError(f"no (alpha, beta, gamma) on a {step} grid in [{minimum}, {maximum}] has "
                         f"alpha*beta^2*gamma^2 within {tolerance} of {target}; widen the "
                         "tolerance or the range, or use a finer step")
    return grid


def grid_key(alpha: float, beta: float, gamma: float) -> str:
    return f"a{alpha:.4g}_b{beta:.4g}_g{gamma:.4g}"


GRID_COLUMNS = ("rank", "key", "alpha", "beta", "gamma", "product", "width", "depth", "resolution",
                "num_blocks", "params", "flops", "flops_ratio", "val_accuracy", "val_loss",
                "steps", "wall_seconds", "same_as", "error")


def grid_search(baseline: ModelSpec, train_fn: TrainFn, out_dir: str, budget: int, *,
                target: float = 2.0, tolerance: float = 0.1, step: float = 0.05,
                maximum: float = 2.0, phi: float = 1.0, resolution_divisor: int = 1,
                candidates: Sequence[tuple[float, float, float]] | None = None,
                settings: dict | None = None, plot: bool = True,
                log: Callable[[str], None] | None = None) -> list[dict]:
    """Run (or resume) the grid search; returns the records ranked by validation accuracy.

    Writes ``results.csv``, ``results.json`` and ``grid_search.png`` in ``out_dir``.
    ``candidates`` replaces the generated grid. ``resolution_divisor`` rounds candidate
    resolutions (1: nearest pixel, so that gamma matters on small baselines). ``settings`` adds
    entries (e.g. the training config) that a restart must match. ``log`` gets one progress
    line per candidate (default: this module's logger at INFO).
    """
    log = log or logger.info
    if budget < 1:
        raise ValueError(f"budget must be at least one training step, got {budget}")
    grid = list(candidates) if candidates is not None else coefficient_grid(
        target, tolerance, step, maximum)
    base_flops = count_spec_flops(baseline).flops
    store = ResultStore(out_dir, dict(kind="grid_search", baseline=spec_summary(baseline),
                                      budget=budget, phi=phi,
                                      resolution_divisor=resolution_divisor, **(settings or {})))
    jobs = []
    for alpha, beta, gamma in grid:
        spec = scaling.scale_spec(baseline, phi, alpha, beta, gamma,
                                  resolution_divisor=resolution_divisor)
        jobs.append(dict(key=grid_key(alpha, beta, gamma), spec=spec, alpha=alpha, beta=beta,
                         gamma=gamma, product=round(alpha * beta ** 2 * gamma ** 2, 6),
                         flops_ratio=count_spec_flops(spec).flops / base_flops))
    log(f"grid search: {len(jobs)} candidates at phi={phi:g} from {baseline.name}, "
        f"{budget} steps each, results in {out_dir}")
    records = run_candidates(jobs, train_fn, budget, store, log)
    ranked = sorted(records, key=lambda r: (-r["val_accuracy"], r["key"]))
    for rank, record in enumerate(ranked, start=1):
        record["rank"] = rank
    write_csv(os.path.join(out_dir, "results.csv"), ranked, GRID_COLUMNS)
    atomic.write_json(os.path.join(out_dir, "results.json"), ranked)
    if plot:
        plot_grid_search(ranked, os.path.join(out_dir, "grid_search.png"),
                         title=f"Grid search of α (depth), β (width), γ (resolution) at "
                               f"φ={phi:g}\nfrom {baseline.name}, {budget} training steps each")
    return ranked


def plot_grid_search(ranked: list[dict], path: str, title: str = "grid search") -> str:
    """Horizontal bars of validation accuracy per candidate, best on top; writes a PNG."""
    plt = pyplot()
    labels = [f"α={r['alpha']:g} β={r['beta']:g} γ={r['gamma']:g} "
              f"({r['flops_ratio']:.2f}x FLOPs){' failed' if r.get('error') else ''}"
              for r in ranked]
    values = [r["val_accuracy"] for r in ranked]
    figure, axes = plt.subplots(figsize=(9, 2.6 + 0.32 * len(ranked)))
    positions = list(range(len(ranked)))[::-1]
    bars = axes.barh(positions, values, color="tab:blue", label="validation accuracy")
    for bar, value in zip(bars, values):
        axes.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.3f}",
                  va="center", fontsize=8)
    axes.set_yticks(positions)
    axes.set_yticklabels(labels, fontsize=8)
    axes.set_xlabel("validation top-1 accuracy")
    axes.set_ylabel("candidate")
    axes.set_xlim(0, max(1.0, max(values, default=0) * 1.1))
    axes.set_title(title)
    axes.legend(loc="lower right")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    with atomic.atomic_path(path, ".png") as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    return path
