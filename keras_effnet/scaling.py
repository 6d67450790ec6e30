"""Compound scaling: rounding rules, the published coefficient table and scaling from any phi.

Paper section 3.3: depth d = alpha**phi, width w = beta**phi, resolution r = gamma**phi with
alpha * beta**2 * gamma**2 ~= 2, so FLOPs grow by about 2**phi.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re

from keras_effnet.blocks import EFFICIENTNET_B0_BLOCKS, EFFICIENTNET_LITE_BLOCKS, BlockArgs

# Step 1 of the paper: the grid-searched coefficients at phi = 1.
ALPHA = 1.2   # depth
BETA = 1.1    # width
GAMMA = 1.15  # resolution

BASE_RESOLUTION = 224
DEPTH_DIVISOR = 8
STOCHASTIC_DEPTH_RATE = 0.2


def round_filters(filters: float, width_coefficient: float, divisor: int = DEPTH_DIVISOR) -> int:
    """Channels after width scaling, rounded to a multiple of ``divisor``.

    Rounds ``filters * width_coefficient`` to the nearest multiple of ``divisor`` (at least
    ``divisor``) and adds one more ``divisor`` if rounding lost more than 10%.
    """
    if filters <= 0 or width_coefficient <= 0:
        raise ValueError(f"filters and width_coefficient must be positive, got {filters}, "
                         f"{width_coefficient}")
    scaled = filters * width_coefficient
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
    """Blocks in a stage after depth scaling: ``ceil(depth_coefficient * repeats)``."""
    if repeats < 1 or depth_coefficient <= 0:
        raise ValueError(f"repeats and depth_coefficient must be positive, got {repeats}, "
                         f"{depth_coefficient}")
    return int(math.ceil(depth_coefficient * repeats))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything that defines one member of the family.

    Attributes:
        name: canonical name, e.g. ``efficientnet-b0``.
        width: width coefficient (channel multiplier).
        depth: depth coefficient (block-count multiplier).
        resolution: default square input size in pixels.
        dropout: dropout rate before the classifier.
        blocks: the baseline stage table that ``width`` and ``depth`` scale.
        activation: ``swish`` (EfficientNet) or ``relu6`` (Lite).
        fixed_stem_head: Lite rule: stem and head channels are not width-scaled and the first
            and last stages are not depth-scaled.
        normalization: how the model normalises [0, 255] inputs inside itself:
            ``imagenet`` (mean/std), ``lite`` ((x - 127) / 128) or ``none``.
    """

    name: str
    width: float
    depth: float
    resolution: int
    dropout: float
    blocks: tuple[BlockArgs, ...] = EFFICIENTNET_B0_BLOCKS
    activation: str = "swish"
    fixed_stem_head: bool = False
    normalization: str = "imagenet"
    stem_filters: int = 32
    head_filters: int = 1280

    def stem_channels(self) -> int:
        if self.fixed_stem_head:
            return self.stem_filters
        return round_filters(self.stem_filters, self.width)

    def head_channels(self) -> int:
        if self.fixed_stem_head:
            return self.head_filters
        return round_filters(self.head_filters, self.width)

    def scaled_blocks(self) -> tuple[BlockArgs, ...]:
        """The stage table after width and depth scaling.

        With a fixed (unscaled) stem, the first stage's input channels are the stem's.
        """
        blocks = scale_blocks(self.blocks, self.width, self.depth,
                              fixed_first_last=self.fixed_stem_head)
        if blocks[0].input_filters != self.stem_channels():
            blocks = (dataclasses.replace(blocks[0], input_filters=self.stem_channels()),) + blocks[1:]
        return blocks

    def num_blocks(self) -> int:
        """Total MBConv blocks in the scaled model (B0: 16, B7: 55)."""
        return sum(b.repeats for b in self.scaled_blocks())


def scale_blocks(blocks: tuple[BlockArgs, ...] | list[BlockArgs], width: float, depth: float,
                 fixed_first_last: bool = False) -> tuple[BlockArgs, ...]:
    """Apply width and depth coefficients to any stage table (EfficientNet's or a user's)."""
    blocks = tuple(blocks)
    scaled = []
    for index, block in enumerate(blocks):
        keep_repeats = fixed_first_last and index in (0, len(blocks) - 1)
        scaled.append(dataclasses.replace(
            block,
            input_filters=round_filters(block.input_filters, width),
            output_filters=round_filters(block.output_filters, width),
            repeats=block.repeats if keep_repeats else round_repeats(block.repeats, depth),
        ))
    return tuple(scaled)


def _efficientnet(name: str, width: float, depth: float, resolution: int, dropout: float) -> ModelSpec:
    return ModelSpec(name, width, depth, resolution, dropout)


def _lite(name: str, width: float, depth: float, resolution: int, dropout: float) -> ModelSpec:
    return ModelSpec(name, width, depth, resolution, dropout, blocks=EFFICIENTNET_LITE_BLOCKS,
                     activation="relu6", fixed_stem_head=True, normalization="lite")


# The published table (tensorflow/tpu efficientnet_builder.py, efficientnet_lite_builder.py).
# B1..B7 are rounded versions of alpha**phi, beta**phi, gamma**phi, not exact powers.
VARIANTS: dict[str, ModelSpec] = {spec.name: spec for spec in [
    _efficientnet("efficientnet-b0", 1.0, 1.0, 224, 0.2),
    _efficientnet("efficientnet-b1", 1.0, 1.1, 240, 0.2),
    _efficientnet("efficientnet-b2", 1.1, 1.2, 260, 0.3),
    _efficientnet("efficientnet-b3", 1.2, 1.4, 300, 0.3),
    _efficientnet("efficientnet-b4", 1.4, 1.8, 380, 0.4),
    _efficientnet("efficientnet-b5", 1.6, 2.2, 456, 0.4),
    _efficientnet("efficientnet-b6", 1.8, 2.6, 528, 0.5),
    _efficientnet("efficientnet-b7", 2.0, 3.1, 600, 0.5),
    _efficientnet("efficientnet-b8", 2.2, 3.6, 672, 0.5),
    _efficientnet("efficientnet-l2", 4.3, 5.3, 800, 0.5),
    _lite("efficientnet-lite0", 1.0, 1.0, 224, 0.2),
    _lite("efficientnet-lite1", 1.0, 1.1, 240, 0.2),
    _lite("efficientnet-lite2", 1.1, 1.2, 260, 0.3),
    _lite("efficientnet-lite3", 1.2, 1.4, 280, 0.3),
    _lite("efficientnet-lite4", 1.4, 1.8, 300, 0.3),
]}


def canonical_name(name: str) -> str:
    """Accept ``b0``, ``B0``, ``EfficientNetB0``, ``efficientnet_b0``, ``efficientnet-lite0`` ...

    Raises ValueError listing the known names when ``name`` is not a published variant.
    """
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {name!r}")
    key = re.sub(r"[\s_\-]", "", name.lower())
    key = key.removeprefix("efficientnet")
    candidate = f"efficientnet-{key}"
    if candidate not in VARIANTS:
        raise ValueError(f"unknown EfficientNet variant {name!r}; known variants: "
                         f"{', '.join(VARIANTS)} (or use compound_spec(phi) for other sizes)")
    return candidate


def get_spec(name: str | ModelSpec) -> ModelSpec:
    """The published ``ModelSpec`` for a variant name (see ``canonical_name``); a spec passes through."""
    if isinstance(name, ModelSpec):
        return name
    return VARIANTS[canonical_name(name)]


def compound_coefficients(phi: float, alpha: float = ALPHA, beta: float = BETA,
                          gamma: float = GAMMA) -> tuple[float, float, float]:
    """(width, depth, resolution multiplier) = (beta**phi, alpha**phi, gamma**phi).

    ``phi`` may be fractional or negative (smaller than the baseline).
    """
    check_phi(phi)
    for label, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 1:
            raise ValueError(f"{label} must be a finite number >= 1 (paper eq. 3), got {value!r}")
    return beta ** phi, alpha ** phi, gamma ** phi


# |phi| beyond this is no network anyone can build: phi=40 asks for 23,520 blocks at 59,000 px
# (B7 is phi~6, L2 about phi~11 by depth); phi=-16 is already a 32 px, 16-block toy.
MAX_ABS_PHI = 16


def check_phi(phi: float) -> None:
    """Refuse a compound coefficient that is not a finite number in [-16, 16]."""
    if isinstance(phi, bool) or not isinstance(phi, numbers.Real) or not math.isfinite(phi) \
            or abs(phi) > MAX_ABS_PHI:
        raise ValueError(f"phi must be a finite number in [-{MAX_ABS_PHI}, {MAX_ABS_PHI}] "
                         f"(B0 is 0, B7 about 6), got {phi!r}")


def flops_multiplier(phi: float, alpha: float = ALPHA, beta: float = BETA,
                     gamma: float = GAMMA) -> float:
    """Theoretical FLOPs growth d * w**2 * r**2 = (alpha * beta**2 * gamma**2)**phi."""
    return (alpha * beta ** 2 * gamma ** 2) ** phi


def compound_spec(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA,
                  base: ModelSpec | None = None, name: str | None = None) -> ModelSpec:
    """A model scaled from ``base`` (default B0) by compound coefficient ``phi``.

    Resolution is ``base.resolution * gamma**phi`` rounded to a multiple of 8 (at least 32).
    Dropout follows the published B0..B7 steps at integer phi: 0.2 + 0.1 * floor(phi / 2),
    clipped to [0.1, 0.5].
    """
    base = base or VARIANTS["efficientnet-b0"]
    width, depth, res_mult = compound_coefficients(phi, alpha, beta, gamma)
    resolution = max(32, int(round(base.resolution * res_mult / 8)) * 8)
    dropout = min(0.5, max(0.1, 0.2 + 0.1 * math.floor(phi / 2)))
    return dataclasses.replace(
        base,
        name=name or f"{base.name}-phi{phi:g}",
        width=base.width * width,
        depth=base.depth * depth,
        resolution=resolution,
        dropout=round(dropout, 3),
    )


def spec_from_blocks(blocks, resolution: int = BASE_RESOLUTION, name: str = "custom",
                     **kwargs) -> ModelSpec:
    """An unscaled ``ModelSpec`` (width = depth = 1) for any stage table.

    ``blocks``: ``BlockArgs`` or their string form (``"r1_k3_s11_e1_i32_o16_se0.25"``).
    Other ``ModelSpec`` fields (``dropout``, ``activation``, ``stem_filters`` ...) pass through.
    """
    blocks = tuple(BlockArgs.decode(b) if isinstance(b, str) else b for b in blocks)
    if not blocks:
        raise ValueError("a block table needs at least one stage")
    kwargs.setdefault("dropout", 0.2)
    return ModelSpec(name=name, width=1.0, depth=1.0, resolution=int(resolution), blocks=blocks,
                     **kwargs)


def as_base_spec(base) -> ModelSpec:
    """A ``ModelSpec`` from a spec, a variant name, a stage table or ``None`` (B0)."""
    if base is None:
        return VARIANTS["efficientnet-b0"]
    if isinstance(base, ModelSpec):
        return base
    if isinstance(base, str):
        return get_spec(base)
    return spec_from_blocks(base)


def round_resolution(pixels: float, divisor: int = 8, minimum: int = 32) -> int:
    """``pixels`` rounded to the nearest multiple of ``divisor``, at least ``minimum``."""
    if pixels <= 0 or divisor < 1:
        raise ValueError(f"pixels and divisor must be positive, got {pixels}, {divisor}")
    return max(minimum, int(round(pixels / divisor)) * divisor)


def multiply_spec(base=None, width: float = 1.0, depth: float = 1.0, resolution: float = 1.0,
                  name: str | None = None, resolution_divisor: int = 8) -> ModelSpec:
    """``base`` with its width, depth and resolution multiplied by independent factors.

    ``base``: a ``ModelSpec``, a variant name or a stage table (see ``spec_from_blocks``);
    default B0. Resolution is rounded with ``round_resolution(.., resolution_divisor)``. Used for
    single-dimension scaling (paper Figure 3) and, via ``scale_spec``, for compound scaling.
    """
    base = as_base_spec(base)
    for label, value in (("width", width), ("depth", depth), ("resolution", resolution)):
        if not value > 0:
            raise ValueError(f"{label} multiplier must be positive, got {value}")
    return dataclasses.replace(
        base,
        name=name or f"{base.name}-w{width:.4g}-d{depth:.4g}-r{resolution:.4g}",
        width=base.width * width,
        depth=base.depth * depth,
        resolution=round_resolution(base.resolution * resolution, resolution_divisor),
    )


def scale_spec(base=None, phi: float = 1.0, alpha: float = ALPHA, beta: float = BETA,
               gamma: float = GAMMA, name: str | None = None,
               resolution_divisor: int = 8) -> ModelSpec:
    """Compound-scale any stage table (EfficientNet's or a user's) by ``phi``.

    Depth x ``alpha**phi``, width x ``beta**phi``, resolution x ``gamma**phi`` (rounded to a
    multiple of ``resolution_divisor``). Unlike ``compound_spec`` it keeps ``base``'s dropout and
    accepts a block table. ``keras_effnet.flops.scaling_report`` gives the FLOPs ratio achieved.
    """
    width, depth, res_mult = compound_coefficients(phi, alpha, beta, gamma)
    base = as_base_spec(base)
    return multiply_spec(base, width, depth, res_mult,
                         name=name or f"{base.name}-phi{phi:g}-a{alpha:g}-b{beta:g}-g{gamma:g}",
                         resolution_divisor=resolution_divisor)
