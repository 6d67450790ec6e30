"""Persistence and the shared loop of the search experiments: one JSON result per candidate,
architecture signatures (identical rounded networks are trained once), CSV and plot helpers."""

from __future__ import annotations

import csv
import json
import os
from typing import Callable, Sequence

from keras_effnet import atomic
from keras_effnet.blocks import encode_blocks
from keras_effnet.flops import count_spec_flops
from keras_effnet.scaling import ModelSpec

TrainFn = Callable[[ModelSpec, int, str], dict]


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


def run_candidates(candidates: list[dict], train_fn: TrainFn, budget: int, store: ResultStore,
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


def write_csv(path: str, rows: list[dict], columns: Sequence[str]) -> None:
    """``rows`` as a CSV with ``columns`` (missing values empty), written atomically."""
    with atomic.atomic_path(path, ".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({c: row.get(c, "") for c in columns})


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend (plots need the ``plot`` extra)."""
    import matplotlib  # noqa: PLC0415 (optional dependency: plots only)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    return plt
