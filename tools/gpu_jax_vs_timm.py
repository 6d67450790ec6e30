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
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with torch
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    return parser.parse_args(argv)


def keras_step(args):
    """(step() -> blocking loss, info) for keras-effnet on the JAX backend."""
    import jax
    import keras
    import numpy as np

    from keras_effnet.model import build_model

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


def timm_step(args, compile_model=False):
    """(step() -> blocking loss, info) for timm efficientnet_b0, channels_last, autocast bf16."""
    import numpy as np
    import timm
    import torch

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


def interleave(steps, args):
    """Per-round images/s of each step function, interleaved; reversed order on odd rounds."""
    results = {name: [] for name in steps}
    names = list(steps)
    for name in names:
        start = time.perf_counter()
        for _ in range(args.warmup):
            steps[name]()
        print(f"{name}: warm-up ({args.warmup} steps incl. compile) "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    for round_index in range(args.rounds):
        for name in (names if round_index % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[name]()
            results[name].append(args.steps * args.batch_size / (time.perf_counter() - start))
    return results


def summarise(results, baseline):
    summary = {}
    for name, per_round in results.items():
        summary[name] = {"images_per_second_median": statistics.median(per_round),
                         "per_round": per_round}
        if name != baseline and baseline in results:
            ratios = [a / b for a, b in zip(per_round, results[baseline])]
            summary[name][f"ratio_vs_{baseline}_median"] = statistics.median(ratios)
    return summary


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    report = {"args": vars(args)}
    steps = {}
    for name, make in (("keras-effnet-jax", keras_step), ("timm-eager", timm_step)):
        try:  # one side failing must not lose the other's figures
            steps[name], report[f"{name}_info"] = make(args)
        except Exception as error:  # noqa: BLE001
            report[f"{name}_error"] = f"{type(error).__name__}: {error}"
            print(report[f"{name}_error"], flush=True)
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


if __name__ == "__main__":
    main()
