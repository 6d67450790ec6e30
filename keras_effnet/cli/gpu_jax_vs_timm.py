"""B0 training images/s in bf16 on one GPU: keras-effnet on the Keras JAX backend vs timm.

No TensorFlow needed: only keras_effnet.model / layers / blocks / scaling are imported, with
KERAS_BACKEND=jax. Both models train on the same random batch (float images in [0, 255],
random labels), SGD with momentum 0.9, cross-entropy, dropout 0.2 and stochastic depth 0.2:

- keras-effnet: ``mixed_bfloat16`` policy, ``model.stateless_call`` inside one ``jax.jit`` step
  (variables donated), the usual Keras-on-JAX training loop;
- timm ``efficientnet_b0``: channels_last, ``torch.autocast(bfloat16)``, eager and (optionally)
  ``torch.compile``.

Steps of the two are interleaved in rounds after warm-up (A, B, A, B ...) and the per-round
ratio's median is reported. Results go to stdout and, as JSON, to ``--out``.

    PYTHONUNBUFFERED=1 python tools/gpu_jax_vs_timm.py --batch_size 256 --out $OUT/gpu.json

The backend is chosen when Keras is first imported, which importing this module already does:
``run()`` therefore re-executes ``python -m keras_effnet.cli.gpu_jax_vs_timm`` with
``KERAS_BACKEND=jax`` (and ``XLA_PYTHON_CLIENT_PREALLOCATE=false``, to share the GPU with torch)
unless the environment already sets both.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

from keras_effnet import build_model, logs

logger = logging.getLogger(__name__)
BACKEND_ENVIRONMENT = {"KERAS_BACKEND": "jax", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The job's options (``--help`` lists them)."""
    parser = argparse.ArgumentParser(prog="gpu_jax_vs_timm", description=__doc__.split("\n")[0])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", default="mixed_bfloat16",
                        choices=["mixed_bfloat16", "float32"])
    parser.add_argument("--torch_compile", action="store_true",
                        help="also time timm under torch.compile (compiles for a minute or more)")
    parser.add_argument("--budget_s", type=float, default=330.0,
                        help="skip optional parts once the script has run this long")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("-v", "--verbosity", type=int, default=1,
                        help="1: progress (default), 0: results only, 2: also TensorFlow/absl INFO")
    return parser.parse_args(argv)


def keras_step(args: argparse.Namespace):
    """(step() -> blocking loss, info) for keras-effnet on the JAX backend."""
    import jax  # noqa: PLC0415  (the GPU job's own dependencies)
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    assert keras.backend.backend() == "jax", keras.backend.backend()
    assert "tensorflow" not in sys.modules, "keras_effnet pulled in TensorFlow"
    keras.config.set_dtype_policy(args.precision)
    model = build_model("efficientnet-b0", input_shape=(args.image_size, args.image_size, 3),
                        classifier_activation=None)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    loss_object = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss_fn(trainable, non_trainable, images, labels):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, images,
                                                     training=True)
        return loss_object(labels, logits), non_trainable

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state, images, labels):
        trainable, non_trainable, optimizer_state = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, images, labels)
        trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
        return loss, (trainable, non_trainable, optimizer_state)

    train_step = jax.jit(train_step, donate_argnums=(0,))
    rng = np.random.default_rng(0)
    images = jax.device_put(rng.uniform(0, 255, (args.batch_size, args.image_size,
                                                 args.image_size, 3)).astype("float32"))
    labels = jax.device_put(rng.integers(0, 1000, args.batch_size).astype("int32"))
    # A tuple of lists, the structure train_step returns: anything else retraces on call 2.
    state = ([v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    holder = {"state": state}

    def step():
        loss, holder["state"] = train_step(holder["state"], images, labels)
        return float(loss)

    info = {"jax": jax.__version__, "keras": keras.__version__,
            "device": str(jax.devices()[0]), "params": model.count_params()}
    return step, info


def timm_step(args: argparse.Namespace, compile_model: bool = False):
    """(step() -> blocking loss, info) for timm efficientnet_b0, channels_last, autocast bf16."""
    import numpy as np  # noqa: PLC0415
    import timm  # noqa: PLC0415
    import torch  # noqa: PLC0415

    torch.backends.cudnn.benchmark = True
    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=1000,
                              drop_rate=0.2, drop_path_rate=0.2)
    model = model.cuda().to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    forward = torch.compile(model) if compile_model else model
    rng = np.random.default_rng(0)
    # timm models expect normalised inputs; scale as our model's normalisation layer does.
    images = torch.from_numpy(rng.uniform(-2, 2, (args.batch_size, 3, args.image_size,
                                                  args.image_size)).astype("float32"))
    images = images.cuda().contiguous(memory_format=torch.channels_last)
    labels = torch.from_numpy(rng.integers(0, 1000, args.batch_size)).cuda()
    use_bf16 = args.precision == "mixed_bfloat16"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            loss = torch.nn.functional.cross_entropy(forward(images), labels)
        loss.backward()
        optimizer.step()
        return float(loss)  # synchronises

    info = {"torch": torch.__version__, "timm": timm.__version__,
            "params": sum(p.numel() for p in model.parameters()),
            "compiled": compile_model}
    return step, info


def interleave(steps: dict, args: argparse.Namespace) -> dict[str, list[float]]:
    """Per-round images/s of each step function, interleaved; reversed order on odd rounds."""
    results = {name: [] for name in steps}
    names = list(steps)
    for name in names:
        start = time.perf_counter()
        for _ in range(args.warmup):
            steps[name]()
        logger.info("%s: warm-up (%d steps incl. compile) %.1f s", name, args.warmup,
                    time.perf_counter() - start)
    for round_index in range(args.rounds):
        for name in (names if round_index % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[name]()
            results[name].append(args.steps * args.batch_size / (time.perf_counter() - start))
    return results


def summarise(results: dict[str, list[float]], baseline: str) -> dict:
    """Median images/s per step function and its per-round ratio median against ``baseline``."""
    summary = {}
    for name, per_round in results.items():
        summary[name] = {"images_per_second_median": statistics.median(per_round),
                         "per_round": per_round}
        if name != baseline and baseline in results:
            ratios = [a / b for a, b in zip(per_round, results[baseline])]
            summary[name][f"ratio_vs_{baseline}_median"] = statistics.median(ratios)
    return summary


def main(argv: list[str] | None = None) -> None:
    """Time both trainers and print (and write) the JSON report."""
    args = parse_args(argv)
    logs.configure(args.verbosity)
    started = time.perf_counter()
    report = {"args": vars(args)}
    steps = {}
    for name, make in (("keras-effnet-jax", keras_step), ("timm-eager", timm_step)):
        try:  # one side failing must not lose the other's figures
            steps[name], report[f"{name}_info"] = make(args)
        except Exception as error:  # noqa: BLE001
            report[f"{name}_error"] = f"{type(error).__name__}: {error}"
            logger.error("%s", report[f"{name}_error"])
    results = interleave(steps, args)
    report["results"] = summarise(results, "timm-eager")
    _emit(report, args)
    if args.torch_compile and len(steps) == 2:
        if time.perf_counter() - started > args.budget_s:
            report["torch_compile"] = "skipped: over the time budget"
        else:
            try:
                compiled, _ = timm_step(args, compile_model=True)
                more = interleave({"keras-effnet-jax": steps["keras-effnet-jax"],
                                   "timm-compiled": compiled}, args)
                report["results_compiled"] = summarise(more, "timm-compiled")
            except Exception as error:  # noqa: BLE001
                report["torch_compile"] = f"failed: {type(error).__name__}: {error}"
        _emit(report, args)
    report["seconds"] = time.perf_counter() - started
    _emit(report, args)


def _emit(report, args):
    print(json.dumps(report, indent=1, default=str), flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1, default=str)


def run() -> None:
    """Entry point: parse (``--help`` exits here), then run on the Keras JAX backend."""
    parse_args(sys.argv[1:])
    if any(os.environ.get(key) is None for key in BACKEND_ENVIRONMENT):
        environment = dict(os.environ)
        for key, value in BACKEND_ENVIRONMENT.items():
            environment.setdefault(key, value)
        os.execve(sys.executable, [sys.executable, "-m", "keras_effnet.cli.gpu_jax_vs_timm", *sys.argv[1:]], environment)
    main(sys.argv[1:])


if __name__ == "__main__":
    run()
