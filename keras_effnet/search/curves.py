"""Scaling curves (the paper's Figures 3 and 8): width, depth, resolution and compound scaling
of one baseline to FLOPs targets, trained for the same budget."""

from __future__ import annotations

import logging
import math
import os
from typing import Callable, Sequence

from keras_effnet import atomic, scaling
from keras_effnet.flops import count_spec_flops, format_count
from keras_effnet.scaling import ModelSpec
from keras_effnet.search.store import ResultStore, TrainFn, pyplot, run_candidates, spec_summary, write_csv

logger = logging.getLogger(__name__)

METHODS = ("width", "depth", "resolution", "compound")
METHOD_LABELS = {"width": "width only (w)", "depth": "depth only (d)",
                 "resolution": "resolution only (r)", "compound": "compound (φ)"}


def scaled_by(baseline: ModelSpec, method: str, coefficient: float, alpha: float = scaling.ALPHA,
              beta: float = scaling.BETA, gamma: float = scaling.GAMMA,
              resolution_divisor: int = 1) -> ModelSpec:
    """``baseline`` scaled along one ``method``: a width/depth/resolution multiplier, or the
    compound coefficient phi for ``compound``."""
    if method == "compound":
        return scaling.scale_spec(baseline, coefficient, alpha, beta, gamma,
                                  name=f"{baseline.name}-compound{coefficient:.4g}",
                                  resolution_divisor=resolution_divisor)
    if method not in METHODS:
        raise ValueError(f"unknown scaling method {method!r}; use one of {', '.join(METHODS)}")
    return scaling.multiply_spec(baseline, **{method: coefficient},
                                 name=f"{baseline.name}-{method}{coefficient:.4g}",
                                 resolution_divisor=resolution_divisor)


def solve_for_flops(baseline: ModelSpec, method: str, flops_ratio: float, *,
                    alpha: float = scaling.ALPHA, beta: float = scaling.BETA,
                    gamma: float = scaling.GAMMA,
                    resolution_divisor: int = 1) -> tuple[float, ModelSpec]:
    """The coefficient (multiplier, or phi for ``compound``) whose scaled model's counted FLOPs
    are nearest (in log) to ``flops_ratio`` times the baseline's; returns (coefficient, spec).

    Channel, repeat and pixel rounding make FLOPs a step function of the coefficient, so the
    achieved ratio is the nearest reachable one (recorded as ``flops_ratio`` in results).
    """
    if flops_ratio <= 0:
        raise ValueError(f"flops_ratio must be positive, got {flops_ratio}")
    base = count_spec_flops(baseline).flops
    low = 0.0 if method == "compound" else 1.0

    def ratio(c):
        return count_spec_flops(scaled_by(baseline, method, c, alpha, beta, gamma,
                                          resolution_divisor)).flops / base

    if flops_ratio <= 1.0:
        return low, scaled_by(baseline, method, low, alpha, beta, gamma, resolution_divisor)
    high = low + 1.0
    for _ in range(40):
        if ratio(high) >= flops_ratio:
            break
        low, high = high, (high * 2 if method != "compound" else high + 2.0)
    else:
        raise ValueError(f"cannot reach {flops_ratio}x FLOPs by {method} scaling")
    for _ in range(50):  # bisection: ratio(low) < target <= ratio(high)
        middle = (low + high) / 2
        if ratio(middle) >= flops_ratio:
            high = middle
        else:
            low = middle
        if high - low < 1e-5:
            break
    choice = min((low, high), key=lambda c: abs(math.log(ratio(c) / flops_ratio)))
    return round(choice, 5), scaled_by(baseline, method, round(choice, 5), alpha, beta, gamma,
                                       resolution_divisor)


CURVE_COLUMNS = ("method", "target_ratio", "coefficient", "key", "width", "depth", "resolution",
                 "num_blocks", "params", "flops", "flops_ratio", "val_accuracy", "val_loss",
                 "steps", "wall_seconds", "same_as", "error")


def scaling_curves(baseline: ModelSpec, train_fn: TrainFn, out_dir: str, budget: int, *,
                   flops_targets: Sequence[float] = (2.0, 4.0, 8.0),
                   methods: Sequence[str] = METHODS, alpha: float = scaling.ALPHA,
                   beta: float = scaling.BETA, gamma: float = scaling.GAMMA,
                   resolution_divisor: int = 1, settings: dict | None = None, plot: bool = True,
                   log: Callable[[str], None] | None = None) -> list[dict]:
    """Run (or resume) the scaling-curve study; returns one row per (method, target).

    ``flops_targets`` are multiples of the baseline's counted FLOPs; the baseline (1x) is trained
    once and starts every curve. Writes ``scaling_curves.csv``, ``scaling_curves.json`` and
    ``scaling_curves.png`` (accuracy against FLOPs) in ``out_dir``. ``log`` gets one progress
    line per model (default: this module's logger at INFO).
    """
    log = log or logger.info
    if budget < 1:
        raise ValueError(f"budget must be at least one training step, got {budget}")
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown scaling method {method!r}; use one of {', '.join(METHODS)}")
    targets = sorted({float(t) for t in flops_targets if float(t) > 1.0})
    if not targets:
        raise ValueError(f"flops_targets must hold multiples above 1, got {list(flops_targets)}")
    base_flops = count_spec_flops(baseline).flops
    store = ResultStore(out_dir, dict(kind="scaling_curves", baseline=spec_summary(baseline),
                                      budget=budget, alpha=alpha, beta=beta, gamma=gamma,
                                      resolution_divisor=resolution_divisor, **(settings or {})))
    jobs = [dict(key="baseline", spec=baseline, method="baseline", target_ratio=1.0,
                 coefficient=1.0, flops_ratio=1.0)]
    for method in methods:
        for target in targets:
            coefficient, spec = solve_for_flops(baseline, method, target, alpha=alpha, beta=beta,
                                                gamma=gamma, resolution_divisor=resolution_divisor)
            jobs.append(dict(key=f"{method}_x{target:g}", spec=spec, method=method,
                             target_ratio=target, coefficient=coefficient,
                             flops_ratio=count_spec_flops(spec).flops / base_flops))
    log(f"scaling curves: {len(jobs)} models from {baseline.name} ({', '.join(methods)} to "
        f"{', '.join(f'{t:g}x' for t in targets)} FLOPs), {budget} steps each, in {out_dir}")
    records = run_candidates(jobs, train_fn, budget, store, log)
    baseline_record = records[0]
    rows = []
    for method in methods:
        rows.append(dict(baseline_record, method=method))
        rows.extend(r for r in records[1:] if r["method"] == method)
    write_csv(os.path.join(out_dir, "scaling_curves.csv"), rows, CURVE_COLUMNS)
    atomic.write_json(os.path.join(out_dir, "scaling_curves.json"), rows)
    if plot:
        plot_scaling_curves(rows, os.path.join(out_dir, "scaling_curves.png"),
                            title=f"Scaling {baseline.name}: one dimension vs compound\n"
                                  f"({budget} training steps each)")
    return rows


def plot_scaling_curves(rows: list[dict], path: str, title: str = "scaling curves") -> str:
    """Validation accuracy against counted FLOPs, one line per method (log x axis); a PNG."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7.5, 5))
    markers = {"width": "o", "depth": "s", "resolution": "^", "compound": "*"}
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    for method in methods:
        points = sorted((r["flops"], r["val_accuracy"]) for r in rows if r["method"] == method)
        axes.plot([p[0] for p in points], [p[1] for p in points],
                  marker=markers.get(method, "o"), markersize=9 if method == "compound" else 6,
                  linewidth=2.2 if method == "compound" else 1.4, label=METHOD_LABELS[method])
    axes.set_xscale("log")
    from matplotlib import ticker  # noqa: PLC0415
    label = ticker.FuncFormatter(lambda value, _: format_count(value))
    axes.xaxis.set_major_formatter(label)
    axes.xaxis.set_minor_formatter(label)
    axes.tick_params(axis="x", which="minor", labelsize=7)
    axes.set_xlabel("FLOPs (multiply-adds per image, log scale)")
    axes.set_ylabel("validation top-1 accuracy")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(title="scaling")
    figure.tight_layout()
    with atomic.atomic_path(path, ".png") as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    return path
