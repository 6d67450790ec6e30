"""tf.distribute: MirroredStrategy on two logical CPUs and MultiWorkerMirroredStrategy with two
worker processes on loopback, each a real ``tools/train.py`` run in a subprocess (bounded time)."""

import json
import os
import socket
import subprocess

import pytest
from test_resume import make_folder_dataset, train_command  # tests/ is on sys.path under pytest

from keras_effnet.distribute import task_info, worker_count_from_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def env_with(**extra):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, **extra)


def test_worker_count_from_env(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert worker_count_from_env() == 1
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert worker_count_from_env() == 2


def test_task_info_of_single_worker_strategy():
    import tensorflow as tf  # noqa: PLC0415

    assert task_info(tf.distribute.get_strategy()) == (0, 1, True)


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    data_root = make_folder_dataset(str(tmp_path / "data"))
    model_dir = tmp_path / "run"
    command = train_command(data_root, model_dir, "--strategy=mirrored", "--epochs=1",
                            "--set=runtime.cpu_devices=2", "--set=model.sync_batch_norm=true")
    done = subprocess.run(command, env=env_with(), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["step"] == 6 and metrics["global_batch_size"] == 8
    assert os.path.exists(model_dir / "export" / "model.keras")


@pytest.mark.slow
def test_multi_worker_mirrored_two_processes_on_loopback(tmp_path):
    data_root = make_folder_dataset(str(tmp_path / "data"))
    model_dir = tmp_path / "run"
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        log = open(tmp_path / f"worker{index}.txt", "w")
        command = train_command(data_root, model_dir, "--strategy=multi_worker_mirrored", "--epochs=1")
        processes.append((subprocess.Popen(command, env=env_with(TF_CONFIG=tf_config), cwd=ROOT,
                                           stdout=log, stderr=subprocess.STDOUT), log))
    try:
        codes = [process.wait(timeout=300) for process, _ in processes]
    finally:
        for process, log in processes:
            if process.poll() is None:
                process.kill()
            log.close()
    logs = [(tmp_path / f"worker{index}.txt").read_text()[-3000:] for index in range(2)]
    assert codes == [0, 0], logs
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["step"] == 6
    assert os.path.exists(model_dir / "ckpt-6.index")
    assert os.path.exists(model_dir / "data_state" / "worker-1" / "ckpt-6.index")
    assert not os.path.exists(model_dir / ".scratch" / "worker-1")  # non-chief copies removed
