"""tf.distribute: MirroredStrategy on two logical CPUs and MultiWorkerMirroredStrategy with two
worker processes on loopback, each a real ``tools/train.py`` run in a subprocess (bounded time)."""

import json
import os
import socket

import pytest
from helpers import make_folder_dataset, start, train_command

from keras_effnet.distribute import task_info, worker_count_from_env


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_worker_count_from_env(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert worker_count_from_env() == 1
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert worker_count_from_env() == 2


def test_task_info_of_single_worker_strategy():
    import tensorflow as tf  # noqa: PLC0415

    assert task_info(tf.distribute.get_strategy()) == (0, 1, True)


class Run:
    """A training run of one or more processes, each logging to its own file."""

    def __init__(self, model_dir, commands_and_env):
        self.model_dir = model_dir
        self.logs = [model_dir.parent / f"{model_dir.name}-{index}.txt"
                     for index in range(len(commands_and_env))]
        self.processes = []
        for log_path, (command, env) in zip(self.logs, commands_and_env):
            with open(log_path, "w") as log:
                self.processes.append(start(command, log, **env))

    def wait(self, timeout=300):
        """Exit statuses, and the tail of each log."""
        codes = [process.wait(timeout=timeout) for process in self.processes]
        return codes, [path.read_text()[-3000:] for path in self.logs]

    def kill(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both strategies' runs, started together: three processes of mostly single-threaded
    imports and tracing that the 2 CI cores run at once instead of one strategy after the other.
    """
    root = tmp_path_factory.mktemp("distribute")
    data_root = make_folder_dataset(str(root / "data"))
    mirrored = root / "mirrored"
    command = train_command(data_root, mirrored, "--strategy=mirrored", "--epochs=1",
                            "--set=runtime.cpu_devices=2", "--set=model.sync_batch_norm=true")
    multi_worker = root / "multi_worker"
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append((train_command(data_root, multi_worker, "--strategy=multi_worker_mirrored",
                                      "--epochs=1"), {"TF_CONFIG": tf_config}))
    started = {"mirrored": Run(mirrored, [(command, {})]),
               "multi_worker": Run(multi_worker, workers)}
    yield started
    for run in started.values():
        run.kill()


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(runs):
    run = runs["mirrored"]
    codes, logs = run.wait()
    assert codes == [0], logs
    model_dir = run.model_dir
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["step"] == 6 and metrics["global_batch_size"] == 8
    assert os.path.exists(model_dir / "export" / "model.keras")


@pytest.mark.slow
def test_multi_worker_mirrored_two_processes_on_loopback(runs):
    run = runs["multi_worker"]
    codes, logs = run.wait()
    assert codes == [0, 0], logs
    model_dir = run.model_dir
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["step"] == 6
    assert os.path.exists(model_dir / "ckpt-6.index")
    assert os.path.exists(model_dir / "data_state" / "worker-1" / "ckpt-6.index")
    assert not os.path.exists(model_dir / ".scratch" / "worker-1")  # non-chief copies removed
