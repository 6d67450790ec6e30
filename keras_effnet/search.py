"""Compound-scaling experiments: the alpha-beta-gamma grid search and the scaling curves.

- ``grid_search``: the paper's step 1 (section 3.3). Enumerate (alpha, beta, gamma) on a grid with
  ``alpha * beta**2 * gamma**2`` within a tolerance of a target (2), scale the baseline by phi = 1
  with each, train each candidate for the same budget and rank them by validation accuracy.
- ``scaling_curves``: the experiment of the paper's Figures 3 and 8. Scale the baseline by width
  only, depth only, resolution only and compound to a set of FLOPs targets, train each for the same
  budget and plot accuracy against FLOPs.

Training is injected: ``train_fn(spec, budget, run_dir) -> {"val_accuracy": ..., ...}`` with
``budget`` in training steps. ``trainer_train_fn(config)`` wraps ``keras_effnet.training.train``.

Restart: every finished candidate is written to ``<out_dir>/results/<key>.json`` atomically; a rerun
with the same ``out_dir`` skips those (and the trainer resumes an interrupted candidate from the
checkpoints in ``<out_dir>/runs/<key>``). ``<out_dir>/settings.json`` pins the baseline, budget and
training setup; a rerun with different ones is refused rather than mixing results. Candidates whose
rounded architecture is identical (common on small baselines) are trained once and share a result.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from typing import Callable, Sequence

from keras_effnet import atomic, scaling
from keras_effnet.blocks import encode_blocks
from keras_effnet.flops import count_spec_flops, format_count
from keras_effnet.scaling import ModelSpec

TrainFn = Callable[[ModelSpec, int, str], dict]

METHODS = ("width", "depth", "resolution", "compound")
METHOD_LABELS = {"width": "width only (w)", "depth": "depth only (d)",
                 "resolution": "resolution only (r)", "compound": "compound (φ)"}


class CandidateInterrupted(RuntimeError):
    """Training of a candidate stopped before its budget (e.g. SIGTERM); nothing was recorded."""


# -- persistence ------------------------------------------------------------------------------

class ResultStore:
    """One JSON file per finished candidate under ``<out_dir>/results``, plus ``settings.json``.

    ``settings`` (JSON-serialisable) must equal those of an earlier run in the same directory;
    otherwise ValueError names the differing keys.
    """

    def __init__(self, out_dir: str, settings: dict):
        self.out_dir = out_dir
        self.results_dir = os.path.join(out_dir, "results")
        os.makedirs(self.results_dir, exist_ok=True)
        path = os.path.join(out_dir, "settings.json")
        settings = json.loads(json.dumps(settings))  # normalise tuples etc.
        if os.path.exists(path):
            with open(path, encoding="utf-8") as stream:
                previous = json.load(stream)
            if previous != settings:
                keys = sorted(k for k in set(previous) | set(settings)
                              if previous.get(k) != settings.get(k))
                raise ValueError(
                    f"{out_dir!r} holds results of a run with different settings ({', '.join(keys)}"
                    f"); use a new output directory, or delete {out_dir!r} to start over")
        else:
            atomic.write_json(path, settings)

    def path(self, key: str) -> str:
        return os.path.join(self.results_dir, f"{key}.json")

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)

    def put(self, key: str, record: dict) -> None:
        atomic.write_json(self.path(key), record)

    def finished(self) -> dict[str, dict]:
        records = {}
        for name in sorted(os.listdir(self.results_dir)):
            if name.endswith(".json"):
                record = self.get(name[:-len(".json")])
                if record is not None:
                    records[name[:-len(".json")]] = record
        return records


def architecture_signature(spec: ModelSpec) -> str:
    """What determines the trained network: scaled stages, stem/head, resolution, activation."""
    return "|".join([" ".join(encode_blocks(spec.scaled_blocks())), str(spec.stem_channels()),
                     str(spec.head_channels()), str(spec.resolution), spec.activation,
                     spec.normalization, f"{spec.dropout:g}"])


def spec_summary(spec: ModelSpec) -> dict:
    """A JSON-able description of a spec (for settings and records)."""
    return dict(name=spec.name, width=spec.width, depth=spec.depth, resolution=spec.resolution,
                dropout=spec.dropout, activation=spec.activation,
                blocks=encode_blocks(spec.blocks), fixed_stem_head=spec.fixed_stem_head,
                stem_filters=spec.stem_filters, head_filters=spec.head_filters)


def _run_candidates(candidates: list[dict], train_fn: TrainFn, budget: int, store: ResultStore,
                    log: Callable[[str], None]) -> list[dict]:
    """Train every candidate not yet in ``store``; returns the records in candidate order.

    Each candidate dict holds ``key`` and ``spec`` plus fields copied into its record.
    """
    by_signature = {record.get("signature"): record for record in store.finished().values()
                    if "val_accuracy" in record}
    records = []
    for index, candidate in enumerate(candidates, start=1):
        key, spec = candidate["key"], candidate["spec"]
        record = store.get(key)
        if record is not None:
            log(f"[{index}/{len(candidates)}] {key}: done before (val_accuracy "
                f"{record['val_accuracy']:.4f})")
            records.append(record)
            continue
        signature = architecture_signature(spec)
        fields = {k: v for k, v in candidate.items() if k != "spec"}
        counted = count_spec_flops(spec)
        fields.update(width=spec.width, depth=spec.depth, resolution=spec.resolution,
                      num_blocks=spec.num_blocks(), params=counted.params, flops=counted.flops,
                      signature=signature)
        twin = by_signature.get(signature)
        if twin is not None:
            metrics = {k: v for k, v in twin.items() if k not in fields and k != "same_as"}
            record = dict(fields, **metrics, same_as=twin.get("same_as") or twin["key"])
            log(f"[{index}/{len(candidates)}] {key}: same architecture as {record['same_as']}, "
                "result shared")
        else:
            log(f"[{index}/{len(candidates)}] {key}: training {spec.name} (width {spec.width:.4g}, "
                f"depth {spec.depth:.4g}, {spec.resolution}px, {counted.flops:,} multiply-adds) "
                f"for {budget} steps")
            metrics = dict(train_fn(spec, budget, os.path.join(store.out_dir, "runs", key)))
            if metrics.get("interrupted"):
                raise CandidateInterrupted(f"training of {key} was interrupted; rerun to resume it")
            if "val_accuracy" not in metrics:
                raise ValueError(f"train_fn returned {sorted(metrics)} for {key}; it must return a "
                                 "dict with 'val_accuracy'")
            record = dict(fields, **{k: v for k, v in metrics.items() if k not in fields})
            log(f"[{index}/{len(candidates)}] {key}: val_accuracy {record['val_accuracy']:.4f}")
        store.put(key, record)
        by_signature.setdefault(signature, record)
        records.append(record)
    return records


def _write_csv(path: str, rows: list[dict], columns: Sequence[str]) -> None:
    with atomic.atomic_path(path, ".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({c: row.get(c, "") for c in columns})


def _pyplot():
    import matplotlib  # noqa: PLC0415 (optional dependency: plots only)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    return plt


# -- step 1: the alpha-beta-gamma grid --------------------------------------------------------

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


def _grid_key(alpha: float, beta: float, gamma: float) -> str:
    return f"a{alpha:.4g}_b{beta:.4g}_g{gamma:.4g}"


GRID_COLUMNS = ("rank", "key", "alpha", "beta", "gamma", "product", "width", "depth", "resolution",
                "num_blocks", "params", "flops", "flops_ratio", "val_accuracy", "val_loss",
                "steps", "wall_seconds", "same_as", "error")


def grid_search(baseline: ModelSpec, train_fn: TrainFn, out_dir: str, budget: int, *,
                target: float = 2.0, tolerance: float = 0.1, step: float = 0.05,
                maximum: float = 2.0, phi: float = 1.0, resolution_divisor: int = 1,
                candidates: Sequence[tuple[float, float, float]] | None = None,
                settings: dict | None = None, plot: bool = True,
                log: Callable[[str], None] = print) -> list[dict]:
    """Run (or resume) the grid search; returns the records ranked by validation accuracy.

    Writes ``results.csv``, ``results.json`` and ``grid_search.png`` in ``out_dir``.
    ``candidates`` replaces the generated grid. ``resolution_divisor`` rounds candidate
    resolutions (1: nearest pixel, so that gamma matters on small baselines). ``settings`` adds
    entries (e.g. the training config) that a restart must match.
    """
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
        jobs.append(dict(key=_grid_key(alpha, beta, gamma), spec=spec, alpha=alpha, beta=beta,
                         gamma=gamma, product=round(alpha * beta ** 2 * gamma ** 2, 6),
                         flops_ratio=count_spec_flops(spec).flops / base_flops))
    log(f"grid search: {len(jobs)} candidates at phi={phi:g} from {baseline.name}, "
        f"{budget} steps each, results in {out_dir}")
    records = _run_candidates(jobs, train_fn, budget, store, log)
    ranked = sorted(records, key=lambda r: (-r["val_accuracy"], r["key"]))
    for rank, record in enumerate(ranked, start=1):
        record["rank"] = rank
    _write_csv(os.path.join(out_dir, "results.csv"), ranked, GRID_COLUMNS)
    atomic.write_json(os.path.join(out_dir, "results.json"), ranked)
    if plot:
        plot_grid_search(ranked, os.path.join(out_dir, "grid_search.png"),
                         title=f"Grid search of α (depth), β (width), γ (resolution) at "
                               f"φ={phi:g}\nfrom {baseline.name}, {budget} training steps each")
    return ranked


def plot_grid_search(ranked: list[dict], path: str, title: str = "grid search") -> str:
    """Horizontal bars of validation accuracy per candidate, best on top; writes a PNG."""
    plt = _pyplot()
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


# -- scaling curves (paper Figures 3 and 8) ---------------------------------------------------

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
                   log: Callable[[str], None] = print) -> list[dict]:
    """Run (or resume) the scaling-curve study; returns one row per (method, target).

    ``flops_targets`` are multiples of the baseline's counted FLOPs; the baseline (1x) is trained
    once and starts every curve. Writes ``scaling_curves.csv``, ``scaling_curves.json`` and
    ``scaling_curves.png`` (accuracy against FLOPs) in ``out_dir``.
    """
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
    records = _run_candidates(jobs, train_fn, budget, store, log)
    baseline_record = records[0]
    rows = []
    for method in methods:
        rows.append(dict(baseline_record, method=method))
        rows.extend(r for r in records[1:] if r["method"] == method)
    _write_csv(os.path.join(out_dir, "scaling_curves.csv"), rows, CURVE_COLUMNS)
    atomic.write_json(os.path.join(out_dir, "scaling_curves.json"), rows)
    if plot:
        plot_scaling_curves(rows, os.path.join(out_dir, "scaling_curves.png"),
                            title=f"Scaling {baseline.name}: one dimension vs compound\n"
                                  f"({budget} training steps each)")
    return rows


def plot_scaling_curves(rows: list[dict], path: str, title: str = "scaling curves") -> str:
    """Validation accuracy against counted FLOPs, one line per method (log x axis); a PNG."""
    plt = _pyplot()
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


# -- the real trainer ----------------------------------------------------------------------------

def candidate_config(base_config, spec: ModelSpec, budget: int, run_dir: str):
    """The training ``Config`` for one candidate: ``base_config`` with the candidate's width, depth
    and resolution, ``budget`` steps (one "epoch" of that many steps, so the schedule spans the
    budget) and ``run_dir`` as model_dir.

    The warm-up keeps its share of the run. Raises ValueError when the trainer's model config
    cannot express ``spec`` (a custom block table): pass your own ``train_fn`` then.
    """
    from keras_effnet import training  # noqa: PLC0415 (heavy; only for real training)

    model = dataclasses.replace(base_config.model, phi=None, width=spec.width, depth=spec.depth,
                                resolution=spec.resolution)
    expressed = training.resolve_spec(model)
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
        from keras_effnet import training  # noqa: PLC0415

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
    from keras_effnet import training  # noqa: PLC0415

    spec = training.resolve_spec(config.model)
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
