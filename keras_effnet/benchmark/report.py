"""Benchmark reports: the machine description, a Markdown table and a CSV."""

from __future__ import annotations

import csv
import io
import os
import platform
from typing import Iterable, Sequence

from keras_effnet.benchmark.timing import Row


# The CPU features that decide which reduced-precision kernels engines can run (Linux flag names):
# int8 dot products (VNNI), bfloat16 (AVX512-BF16, AMX) and wide vectors.
SPEED_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                  "amx_bf16", "amx_int8", "amx_fp16")


def cpu_model_and_features(cpuinfo: str) -> tuple[str | None, list[str]]:
    """The model name and the :data:`SPEED_FEATURES` present, from ``/proc/cpuinfo`` text."""
    model, flags = None, set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model is None:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, [feature for feature in SPEED_FEATURES if feature in flags]


def machine_description(threads: int | None = None) -> dict[str, str]:
    """The machine and software a report was measured on."""
    cpu, features = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model, features = cpu_model_and_features(handle.read())
        cpu = model or cpu
    except OSError:
        pass
    info = {"cpu": cpu, "cpu features": " ".join(features) or "unknown",
            "cores": str(os.cpu_count()),
            "load average (1, 5, 15 min)": " ".join(f"{v:.2f}" for v in os.getloadavg()),
            "threads": "framework default" if threads is None else str(threads),
            "python": platform.python_version()}
    for module in ("tensorflow", "keras", "onnxruntime", "openvino", "torch"):
        try:
            info[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - optional packages
            continue
    return info


def to_markdown(rows: Sequence[Row], machine: dict[str, str] | None = None,
                memory: Sequence[dict] = (), notes: Iterable[str] = ()) -> str:
    """The report as Markdown: machine, speed table, memory table, notes."""
    out = io.StringIO()
    if machine:
        out.write("Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()) + "\n\n")
    out.write("| engine | task | batch | images/s | p50 ms | p90 ms "
              "| × baseline (median of rounds) | baseline |\n"
              "|---|---|---:|---:|---:|---:|---:|---|\n")
    for row in rows:
        ratio = "" if row.ratio_median is None else f"{row.ratio_median:.2f}×"
        out.write(f"| {row.engine} | {row.task} | {row.batch_size} | "
                  f"{row.images_per_second:.1f} | {row.p50_ms:.1f} | {row.p90_ms:.1f} | "
                  f"{ratio} | {row.baseline} |\n")
    if memory:
        out.write("\n| model | RSS after imports MiB | peak RSS inference MiB | "
                  "peak RSS training MiB |\n|---|---:|---:|---:|\n")
        for entry in memory:
            out.write(f"| {entry['engine']} | {entry['rss_after_imports_mib']:.0f} | "
                      f"{entry['peak_inference_mib']:.0f} | "
                      f"{_format_optional(entry.get('peak_training_mib'))} |\n")
    notes = list(notes)
    if notes:
        out.write("\n" + "\n".join(f"- {note}" for note in notes) + "\n")
    return out.getvalue()


def _format_optional(value) -> str:
    return "" if value is None else f"{value:.0f}"


def to_csv(rows: Sequence[Row], memory: Sequence[dict] = ()) -> str:
    """The report as CSV: one line per row; memory entries as task ``peak_rss_*``."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["engine", "task", "batch_size", "images_per_second", "p50_ms", "p90_ms",
                     "baseline", "ratio_median", "rounds"])
    for row in rows:
        writer.writerow([row.engine, row.task, row.batch_size, f"{row.images_per_second:.3f}",
                         f"{row.p50_ms:.3f}", f"{row.p90_ms:.3f}", row.baseline,
                         "" if row.ratio_median is None else f"{row.ratio_median:.4f}",
                         row.rounds])
    for entry in memory:
        for key in ("rss_after_imports_mib", "peak_inference_mib", "peak_training_mib"):
            if entry.get(key) is not None:
                writer.writerow([entry["engine"], key, "", f"{entry[key]:.1f}", "", "", "", "",
                                 ""])
    return out.getvalue()
