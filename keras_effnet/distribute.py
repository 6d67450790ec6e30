"""``tf.distribute`` strategies from ``RuntimeConfig`` and the per-worker facts the trainer needs."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from keras_effnet.config import RuntimeConfig


def create_strategy(runtime: RuntimeConfig) -> tf.distribute.Strategy:
    """Build the strategy named by ``runtime.strategy``.

    - ``default``: no distribution (one device).
    - ``one_device``: ``OneDeviceStrategy`` on the first GPU if any, else the CPU.
    - ``mirrored``: ``MirroredStrategy`` on ``runtime.num_gpus`` GPUs (all visible GPUs when unset;
      all logical CPUs when there is no GPU, e.g. the two logical CPUs of the tests).
    - ``multi_worker_mirrored``: ``MultiWorkerMirroredStrategy``; the cluster comes from ``TF_CONFIG``.
    - ``tpu``: ``TPUStrategy`` on ``runtime.tpu`` (a name, ``grpc://`` address or ``local``).
    """
    name = runtime.strategy
    if name == "multi_worker_mirrored":
        # Must come before anything initialises the TensorFlow runtime (even listing devices).
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy multi_worker_mirrored needs the cluster in the TF_CONFIG "
                             "environment variable (see docs/training.md)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        if gpus:
            count = runtime.num_gpus or len(gpus)
            if count > len(gpus):
                raise ValueError(f"--num_gpus={count} but only {len(gpus)} GPUs are visible")
            devices = [gpu.name for gpu in gpus[:count]]
        else:
            devices = [cpu.name for cpu in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "tpu":
        tpu = runtime.tpu or ""
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu="" if tpu == "local" else tpu)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; use default, one_device, mirrored, "
                     "multi_worker_mirrored or tpu")


def task_info(strategy: tf.distribute.Strategy) -> tuple[int, int, bool]:
    """(worker index, number of workers, is chief) for this process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return 0, 1, True
    spec = resolver.cluster_spec().as_dict()
    workers = len(spec.get("worker", [])) + len(spec.get("chief", []))
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return 0, workers, True
    offset = 1 if "chief" in spec else 0
    index = (task_id or 0) + offset
    return index, workers, (task_type in (None, "worker") and index == 0)


def worker_count_from_env() -> int:
    """Workers listed in ``TF_CONFIG`` (1 when unset); available before TF initialises."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 1
    cluster = json.loads(raw).get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def configure_logical_cpus(count: int) -> None:
    """Split the CPU into ``count`` logical devices (must run before TensorFlow initialises)."""
    if count < 1:
        raise ValueError(f"runtime.cpu_devices must be >= 1, got {count}")
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
