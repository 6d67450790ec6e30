"""Gradient checkpointing (issue #15): recompute each MBConv block in the backward pass.

``checkpointed_forward(model, spec)`` returns ``forward(images, training=True) -> outputs`` that
computes what ``model(images, training=True)`` computes, with the same variables, but keeps only
each segment's input for the backward pass and recomputes the segment's inside there
(``tf.recompute_grad``). The segments are the stem and every block of
``keras_effnet.plan.block_plan(spec)``; the head (``top_conv`` onwards) runs as usual. The model
itself is untouched: the segments are ``keras.Model`` views over its graph (the same layers and
variables), so its saved file, weights and layer names do not change.

Plain ``tf.recompute_grad`` (all that ``keras.remat`` does on the TensorFlow backend; Keras 3.15)
runs a segment twice, and two things in a segment are not pure functions of its input: batch
norm updates its moving statistics inside ``call`` (updated twice, so after one step they hold a
second update of the already updated value), and stochastic depth draws its mask from a
seed-generator state that the first pass has advanced (another mask in the backward pass, so
wrong gradients: off by twice the largest gradient on the test model with rate 0.5).
``keras.RematScope`` has both problems too, and it is taken at layer creation (the builder would
have to run inside it) and works per layer, not per block. Here both passes run inside a
``keras.StatelessScope`` that maps every non-trainable variable of the segment to its value
before the segment: the passes read the same state, so they draw the same masks, and neither
writes a variable; the updates of the FIRST pass (moving statistics, advanced seeds) are then
assigned once. Logits, gradients and the state after a step equal the plain model's
(``tests/test_remat.py``).

Cost: each segment's forward runs twice. ``keras-effnet-benchmark --training_memory`` measures
it (docs/performance.md, "Gradient checkpointing").
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import keras
import tensorflow as tf

from keras_effnet.plan import block_plan
from keras_effnet.scaling import ModelSpec, get_spec

STEM_OUTPUT = "stem_activation"


def _layer_output(model: keras.Model, name: str, spec: ModelSpec):
    try:
        return model.get_layer(name).output
    except ValueError as error:
        raise ValueError(
            f"model {model.name!r} has no layer {name!r}, which the block plan of "
            f"{spec.name} expects; pass the spec the model was built from (the variant name, "
            "or TrainingTask.spec)") from error


class CheckpointedForward:
    """``model``'s training forward pass with each segment recomputed in the backward pass.

    ``segments``: the stem and block views (``keras.Model`` over the model's own layers), named
    ``stem``, ``block1a`` ...; ``head``: the rest. See the module docstring.
    """

    def __init__(self, model: keras.Model, spec: ModelSpec | str):
        spec = get_spec(spec)
        self.model = model
        boundary = _layer_output(model, STEM_OUTPUT, spec)
        segments = [keras.Model(model.inputs, boundary, name="stem")]
        for block in block_plan(spec):
            output = _layer_output(model, block.output_layer, spec)
            segments.append(keras.Model(boundary, output, name=block.prefix.rstrip("_")))
            boundary = output
        self.segments: tuple[keras.Model, ...] = tuple(segments)
        self.head = keras.Model(boundary, model.output, name="head")

    def __call__(self, images, training: bool = True):
        """Outputs of ``model(images, training=training)``; recomputed segments when training."""
        if not training:
            return self.model(images, training=False)
        x = images
        for segment in self.segments:
            x = recomputed_call(segment, x)
        return self.head(x, training=True)


def checkpointed_forward(model: keras.Model, spec: ModelSpec | str) -> CheckpointedForward:
    """A forward callable for training ``model`` (built from ``spec``) with gradient checkpointing.

    Use it where the training step calls the model, inside the ``tf.GradientTape``:
    ``logits = forward(images, training=True)``; the gradients are those of
    ``model.trainable_variables`` as usual. Build it once (it makes one view per block).

    Raises:
        ValueError: ``model`` lacks a layer the block plan of ``spec`` names (another spec).
    """
    return CheckpointedForward(model, spec)


def recomputed_call(segment: keras.Model, inputs):
    """``segment(inputs, training=True)``, recomputed in the backward pass.

    Both passes read the segment's non-trainable variables (moving statistics, seed-generator
    states) as they were before the segment and write none; the first pass's updates are
    assigned afterwards, once.
    """
    state = list(segment.non_trainable_variables)
    before = [tf.identity(variable.value) for variable in state]
    first_pass_updates: list[list] = []

    def run(x):
        with keras.StatelessScope(list(zip(state, before)), initialize_variables=False) as scope:
            mapped = [scope.get_current_value(variable) for variable in state]
            outputs = segment(x, training=True)
        first_pass_updates.append(
            [(variable, scope.get_current_value(variable))
             for variable, value in zip(state, mapped)
             if scope.get_current_value(variable) is not value])
        return outputs

    outputs = tf.recompute_grad(run)(inputs)
    for variable, value in first_pass_updates[0]:  # [1], from the backward pass, is dropped
        variable.assign(value)
    return outputs


@dataclasses.dataclass(frozen=True)
class BackwardFootprint:
    """Forward-pass tensors that a training step's backward pass reads, i.e. what it keeps
    alive from the end of the forward pass: a fact of the traced graph, not a timing.

    Counted: tensors of a static shape other than variable reads (those alias the weights).
    """

    tensors: int
    bytes: int

    @property
    def mib(self) -> float:
        return self.bytes / 2**20


def backward_footprint(forward: Callable, variables: Sequence, input_shape: Sequence[int],
                       dtype: str = "float32") -> BackwardFootprint:
    """What ``forward(images, training=True)`` keeps for the gradient of its summed outputs
    with respect to ``variables``, for images of ``input_shape`` [batch, height, width, 3].

    Traces one ``tf.function`` (nothing runs, no variable changes) and takes the operations
    created before ``tape.gradient`` as the forward pass. Grappler's later rewrites are not
    seen; the real peak adds the backward pass's own temporaries.
    """
    variables = list(variables)
    boundary: list[int] = []

    @tf.function
    def step(images):
        with tf.GradientTape() as tape:
            outputs = forward(images, training=True)
            total = tf.add_n([tf.reduce_sum(tf.cast(output, tf.float32))
                              for output in tf.nest.flatten(outputs)])
        boundary.append(len(tf.compat.v1.get_default_graph().get_operations()))
        return tape.gradient(total, variables)

    graph = step.get_concrete_function(tf.TensorSpec(tuple(input_shape), dtype)).graph
    operations = graph.get_operations()
    forward_ops = {op.name for op in operations[:boundary[0]]}
    kept: dict[str, int] = {}
    for op in operations[boundary[0]:]:
        for tensor in op.inputs:
            if (tensor.op.name in forward_ops and tensor.name not in kept
                    and tensor.op.type != "ReadVariableOp"
                    and tensor.dtype not in (tf.resource, tf.variant)
                    and tensor.shape.is_fully_defined()):
                kept[tensor.name] = tensor.shape.num_elements() * tensor.dtype.size
    return BackwardFootprint(len(kept), sum(kept.values()))
