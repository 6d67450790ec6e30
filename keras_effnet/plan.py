"""The block plan: every block of a scaled model, computed once from its ``ModelSpec``.

The builder (``keras_effnet.model``), the weight readers (``keras_effnet.weights``), FLOPs
counting (``keras_effnet.flops``) and ``feature_info`` all read their per-block numbers
(channels, stride, skip, layer-name prefix) from here, so they cannot disagree.
"""

from __future__ import annotations

import dataclasses

from keras_effnet.blocks import BlockArgs
from keras_effnet.scaling import ModelSpec, get_spec

STEM_STRIDE = 2


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """One MBConv block of a scaled model.

    Attributes:
        index: 0-based position in the model (``blocks_{index}`` / ``_blocks.{index}`` in the
            original TensorFlow and PyTorch checkpoints).
        stage: 1-based stage number; ``repeat``: 0-based position inside the stage.
        prefix: Keras layer-name prefix, ``block{stage}{letter}_`` (``block2a_``).
        args: the block's scaled arguments (``repeats=1``; only a stage's first block has the
            stage's stride and input filters).
        input_channels: channels that arrive at the block (previous block's output, or the stem).
        expanded_channels: width after the 1x1 expansion (``input_channels`` without one).
        se_channels: squeeze-and-excitation bottleneck width, from the block's INPUT filters
            (0 without SE).
        output_channels, kernel_size, stride: as the names say.
        skip: identity skip (with stochastic depth) around the block.
        output_stride: total downsampling of the block's output relative to the input image.
    """

    index: int
    stage: int
    repeat: int
    prefix: str
    args: BlockArgs
    input_channels: int
    expanded_channels: int
    se_channels: int
    output_channels: int
    kernel_size: int
    stride: int
    skip: bool
    output_stride: int

    @property
    def has_expand(self) -> bool:
        return self.args.expand_ratio != 1

    @property
    def has_se(self) -> bool:
        return self.se_channels > 0

    @property
    def output_layer(self) -> str:
        """Name of the layer whose output is the block's output."""
        return f"{self.prefix}add" if self.skip else f"{self.prefix}project_bn"


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """One multi-scale endpoint: output of ``layer_name`` with ``channels`` at ``stride``."""

    name: str
    layer_name: str
    channels: int
    stride: int


def block_letters(index: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'ba' ... (keras.applications' chr(index + 97) below 26)."""
    if index < 26:
        return chr(97 + index)
    return block_letters(index // 26) + chr(97 + index % 26)


def block_plan(spec: ModelSpec | str) -> tuple[BlockPlan, ...]:
    """Every block of the scaled model in order (see ``BlockPlan``)."""
    spec = get_spec(spec)
    plans: list[BlockPlan] = []
    channels = spec.stem_channels()
    stride_so_far = STEM_STRIDE
    for stage, stage_args in enumerate(spec.scaled_blocks(), start=1):
        for repeat in range(stage_args.repeats):
            args = stage_args if repeat == 0 else dataclasses.replace(
                stage_args, strides=1, input_filters=stage_args.output_filters)
            args = dataclasses.replace(args, repeats=1)
            # Widths derived from the table (expansion, SE) come from the block's declared input
            # filters, as in the original builder; convolutions read what actually arrives.
            expanded = (int(args.input_filters * args.expand_ratio) if args.expand_ratio != 1
                        else channels)
            se = max(1, int(args.input_filters * args.se_ratio)) if args.has_se else 0
            stride_so_far *= args.strides
            plans.append(BlockPlan(
                index=len(plans), stage=stage, repeat=repeat,
                prefix=f"block{stage}{block_letters(repeat)}_", args=args,
                input_channels=channels, expanded_channels=expanded, se_channels=se,
                output_channels=args.output_filters, kernel_size=args.kernel_size,
                stride=args.strides,
                skip=(args.id_skip and args.strides == 1
                      and args.input_filters == args.output_filters),
                output_stride=stride_so_far))
            channels = args.output_filters
    return tuple(plans)


def feature_info(spec: ModelSpec | str) -> list[FeatureInfo]:
    """The multi-scale endpoints (strides 2, 4, 8, 16, 32) of a variant.

    Each endpoint is the output of the last block that runs at that stride.
    """
    last_at_stride: dict[int, BlockPlan] = {}
    for block in block_plan(spec):
        last_at_stride[block.output_stride] = block
    return [FeatureInfo(f"stride_{stride}", block.output_layer, block.output_channels, stride)
            for stride, block in sorted(last_at_stride.items())]
