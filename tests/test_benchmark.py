"""Benchmark logic: interleaving, per-round ratio medians, reports; one small end-to-end run."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from keras_effnet import benchmark
from keras_effnet.benchmark import BenchmarkConfig, Measurement, Row, engines, report
from keras_effnet.scaling import compound_spec


class FakeClock:
    """A clock that only moves when a fake step runs."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def step(self, seconds):
        def run():
            self.now += seconds
        return run


def test_interleave_alternates_order_and_counts_calls():
    clock = FakeClock()
    order = []

    def step(name, seconds):
        advance = clock.step(seconds)

        def run():
            order.append(name)
            advance()
        return run

    results = benchmark.interleave({"a": step("a", 0.1), "b": step("b", 0.2)}, batch_size=4,
                                   task="inference", rounds=3, warmup=1, min_round_seconds=0.4,
                                   clock=clock)
    # Calibration: warm-up + one timed call each; then a: 4 calls, b: 2 calls per round.
    timed = order[4:]
    assert timed == ["a"] * 4 + ["b"] * 2 + ["b"] * 2 + ["a"] * 4 + ["a"] * 4 + ["b"] * 2
    assert results["a"].round_images_per_second == pytest.approx([40.0] * 3)
    assert results["b"].round_images_per_second == pytest.approx([20.0] * 3)
    assert len(results["a"].call_seconds) == 12
    assert results["a"].latency_ms(0.5) == pytest.approx(100.0)


def test_ratio_median_is_per_round():
    fast = Measurement("effnet", "inference", 1, [10.0, 30.0, 12.0])
    slow = Measurement("applications", "inference", 1, [5.0, 30.0, 10.0])
    # per-round ratios 2.0, 1.0, 1.2 -> median 1.2 (a ratio of medians would give 12/10).
    assert benchmark.ratio_median(fast, slow) == pytest.approx(1.2)


def test_rows_link_engines_to_their_baselines():
    measurements = {
        "effnet": Measurement("effnet", "inference", 1, [2.0, 2.0], [0.5, 0.5]),
        "applications": Measurement("applications", "inference", 1, [1.0, 1.0], [1.0, 1.0]),
        "effnet-tflite": Measurement("effnet-tflite", "inference", 1, [4.0, 4.0], [0.25, 0.25]),
    }
    rows = {row.engine: row for row in benchmark.rows_from(measurements)}
    assert rows["effnet"].baseline == "applications"
    assert rows["effnet"].ratio_median == pytest.approx(2.0)
    assert rows["applications"].ratio_median is None
    # applications-tflite was not measured: no ratio rather than a wrong one.
    assert rows["effnet-tflite"].ratio_median is None and rows["effnet-tflite"].baseline == ""


def test_markdown_and_csv_reports():
    rows = [Row("effnet", "inference", 32, 31.0, 1000.0, 1100.0, "applications", 1.15, 7),
            Row("applications", "inference", 32, 27.0, 1180.0, 1250.0, "", None, 7)]
    memory = [{"engine": "effnet", "rss_after_imports_mib": 700.0, "peak_inference_mib": 1500.0,
               "peak_training_mib": 2500.0}]
    markdown = benchmark.to_markdown(rows, {"cpu": "test cpu", "cores": "2"}, memory,
                                     ["a note"])
    expected = "| effnet | inference | 32 | 31.0 | 1000.0 | 1100.0 | 1.15× | applications |"
    assert expected in markdown
    assert "| effnet | 700 | 1500 | 2500 |" in markdown
    assert "Machine: cpu test cpu; cores 2" in markdown and "- a note" in markdown
    table = list(csv.reader(io.StringIO(benchmark.to_csv(rows, memory))))
    assert table[0][:4] == ["engine", "task", "batch_size", "images_per_second"]
    assert table[1][0] == "effnet" and float(table[1][7]) == pytest.approx(1.15)
    assert ["effnet", "peak_training_mib"] == table[-1][:2]


@pytest.mark.parametrize("kwargs, match", [
    ({"engines": ("nope",)}, "unknown engines"),
    ({"precision": "float64"}, "precision"),
    ({"batch_sizes": (0,)}, "batch_sizes"),
    ({"rounds": 0}, "rounds"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BenchmarkConfig(**kwargs)


def test_machine_description_and_peak_rss():
    info = benchmark.machine_description(threads=2)
    assert info["threads"] == "2" and int(info["cores"]) >= 1
    assert info["cpu features"]  # the features found, or "unknown" off Linux
    cpuinfo = ("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 avx512f "
               "avx512_bf16 avx512_vnni\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n"
               "flags\t\t: fpu sse avx2\n")
    assert report.cpu_model_and_features(cpuinfo) == (
        "AMD EPYC", ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"])
    assert report.cpu_model_and_features("") == (None, [])
    assert benchmark.peak_rss_mib() >= benchmark.rss_mib() * 0.5 > 0


def test_missing_exporter_or_peer_is_reported_not_raised(monkeypatch):
    def unavailable(*args, **kwargs):
        raise benchmark.EngineUnavailable("no exporter")

    unavailable_engines = {}
    steps = benchmark.collect_steps(unavailable, ["effnet-tflite"], unavailable_engines)
    assert steps == {} and unavailable_engines == {"effnet-tflite": "no exporter"}
    with pytest.raises(benchmark.EngineUnavailable, match="no efficientnet-lite0"):
        benchmark.build_keras("applications", "lite0", 64)


@pytest.fixture
def tiny_effnet(monkeypatch):
    """Our engines on a 7-block network (compound phi=-8) through the real ``build_keras``;
    keras.applications stays B0. The end-to-end tests check that every engine builds, exports,
    runs and is reported, which does not depend on the network's size; on 2 CPU cores the B0
    exports (deploy, TFLite, ONNX, OpenVINO, int8 calibration) took 90 s of the 140."""
    real = engines.build_keras

    def build_keras(engine, model, image_size):
        return real(engine, compound_spec(-8) if engine.startswith("effnet") else model,
                    image_size)

    monkeypatch.setattr(engines, "build_keras", build_keras)


@pytest.fixture
def tiny_everything(monkeypatch):
    """Every engine, keras.applications' too, on the 7-block network: for checks of how the
    engines are wired (which run, which is the baseline), where a B0 conversion to TFLite for
    the baseline costs a fifth of the test and checks nothing more."""
    real = engines.build_keras
    monkeypatch.setattr(engines, "build_keras",
                        lambda engine, model, image_size: real("effnet", compound_spec(-8), image_size))


@pytest.mark.slow
def test_small_end_to_end_run(tiny_effnet):
    config = BenchmarkConfig(model="b0", image_size=32, batch_sizes=(2,), train_batch_size=2,
                             engines=("effnet", "applications", "effnet-deploy"), rounds=2,
                             warmup=1, min_round_seconds=0.0, memory=False)
    rows, unavailable = benchmark.run_benchmark(config, log=lambda message: None)
    assert not unavailable
    found = {(row.engine, row.task) for row in rows}
    assert found == {("effnet", "inference"), ("applications", "inference"),
                     ("effnet-deploy", "inference"), ("effnet", "training"),
                     ("applications", "training")}
    assert all(row.images_per_second > 0 and row.rounds == 2 for row in rows)
    assert all(row.ratio_median > 0 for row in rows if row.engine != "applications")


@pytest.mark.slow
def test_reduced_precision_engines_run_and_are_in_the_default_set(tiny_everything):
    assert set(benchmark.REDUCED_PRECISION_ENGINES) <= set(benchmark.DEFAULT_ENGINES)
    engines = ("applications-tflite", "effnet-tflite-int8", "effnet-onnxruntime-int8",
               "effnet-openvino", "effnet-openvino-int8")
    config = BenchmarkConfig(model="b0", image_size=32, batch_sizes=(2,), train_batch_size=None,
                             engines=engines, rounds=1, warmup=1, min_round_seconds=0.0,
                             memory=False)
    rows, unavailable = benchmark.run_benchmark(config, log=lambda message: None)
    measured = {row.engine for row in rows}
    assert measured | set(unavailable) == set(engines)
    assert all(row.baseline == "applications-tflite" for row in rows
               if row.engine != "applications-tflite")


def test_int8_report_table_gives_agreement_and_probability_change():
    from keras_effnet.cli import report_int8  # noqa: PLC0415

    reference = np.array([[3.0, 1.0, 0.0, 0, 0, 0], [0.0, 2.0, 1.0, 0, 0, 0]])
    changed = reference.copy()
    changed[1] = [0.0, 1.0, 2.0, 0, 0, 0]
    table = report_int8.agreement_table(reference, {"same": reference, "changed": changed})
    assert "| same | 1.000 | 1.000 | 0.0000 | 0.0000 |" in table
    assert "| changed | 0.500 |" in table


@pytest.mark.parametrize("name, own_flags", [
    ("benchmark", {"model", "engines", "rounds", "min_round_seconds", "memory"}),
    ("bench_input", {"augments", "randaugment_layers", "per_core"}),
    ("model_table", {"models", "phi", "custom", "count"}),
    ("report_int8", {"model", "weights", "calibration"}),
])
def test_command_lines_define_their_flags_in_run_and_list_them_in_help(name, own_flags):
    """Flags appear only when the main defines them, as key flags of the running program."""
    import importlib
    import sys

    from helpers import restored_flags

    module = importlib.import_module(f"keras_effnet.cli.{name}")
    with restored_flags() as values:
        module.define_flags()
        module.define_flags()  # a second main in the same process redefines, never fails
        listed = {flag.name for flag in values.get_key_flags_for_module(sys.argv[0])}
    assert own_flags <= listed
