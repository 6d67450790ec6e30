"""Block arguments: the architecture as data.

Each stage of an EfficientNet is described by one string such as
``r1_k3_s11_e1_i32_o16_se0.25`` (the form used by the original TensorFlow code).
``BlockArgs.decode`` turns it into a frozen dataclass and ``BlockArgs.encode`` turns it back.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable

_TOKEN = re.compile(r"^([a-z]+)(.*)$")


@dataclasses.dataclass(frozen=True)
class BlockArgs:
    """One stage of MBConv blocks.

    Attributes:
        repeats: number of blocks in the stage (before depth scaling).
        kernel_size: depthwise kernel size (square).
        strides: stride of the first block of the stage (the others use 1).
        expand_ratio: width of the inverted bottleneck relative to ``input_filters``.
        input_filters: channels entering the stage (before width scaling).
        output_filters: channels leaving the stage (before width scaling).
        se_ratio: squeeze-and-excitation reduction relative to the block's input
            channels, or ``None`` for no SE.
        id_skip: whether blocks with stride 1 and equal in/out channels add an identity skip.
    """

    repeats: int
    kernel_size: int
    strides: int
    expand_ratio: float
    input_filters: int
    output_filters: int
    se_ratio: float | None = 0.25
    id_skip: bool = True

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {self.kernel_size}")
        if self.strides not in (1, 2):
            raise ValueError(f"strides must be 1 or 2, got {self.strides}")
        if self.expand_ratio < 1:
            raise ValueError(f"expand_ratio must be >= 1, got {self.expand_ratio}")
        if self.input_filters < 1 or self.output_filters < 1:
            raise ValueError(
                f"filters must be positive, got i{self.input_filters} o{self.output_filters}")
        if self.se_ratio is not None and not 0 < self.se_ratio <= 1:
            raise ValueError(f"se_ratio must be in (0, 1] or None, got {self.se_ratio}")

    @property
    def has_se(self) -> bool:
        return self.se_ratio is not None

    @classmethod
    def decode(cls, text: str) -> "BlockArgs":
        """Parse ``r1_k3_s11_e1_i32_o16_se0.25[_noskip]``; raises ValueError naming the bad token."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"block string must be a non-empty string, got {text!r}")
        values: dict[str, str] = {}
        id_skip = True
        for token in text.strip().split("_"):
            if token == "noskip":
                id_skip = False
                continue
            match = _TOKEN.match(token)
            if not match or not match.group(2):
                raise ValueError(
                    f"bad token {token!r} in block string {text!r}: expected a key "
                    "(r, k, s, e, i, o, se) followed by a number, or 'noskip'")
            key, value = match.groups()
            if key not in ("r", "k", "s", "e", "i", "o", "se"):
                raise ValueError(
                    f"unknown key {key!r} (token {token!r}) in block string {text!r}; "
                    "known keys: r, k, s, e, i, o, se, noskip")
            if key in values:
                raise ValueError(f"key {key!r} given twice in block string {text!r}")
            values[key] = value
        missing = [k for k in ("r", "k", "s", "e", "i", "o") if k not in values]
        if missing:
            raise ValueError(f"block string {text!r} lacks required keys {missing}")
        stride = values["s"]
        if not re.fullmatch(r"\d|\d\d", stride) or (len(stride) == 2 and stride[0] != stride[1]):
            raise ValueError(
                f"bad token 's{stride}' in block string {text!r}: strides are one digit or two "
                "equal digits (s11, s22)")

        def number(key: str, kind: type):
            try:
                return kind(values[key])
            except ValueError:
                raise ValueError(
                    f"bad token '{key}{values[key]}' in block string {text!r}: "
                    f"{values[key]!r} is not a valid {kind.__name__}") from None

        return cls(
            repeats=number("r", int),
            kernel_size=number("k", int),
            strides=int(stride[0]),
            expand_ratio=number("e", float),
            input_filters=number("i", int),
            output_filters=number("o", int),
            se_ratio=number("se", float) if "se" in values else None,
            id_skip=id_skip,
        )

    def encode(self) -> str:
        """The string form; ``BlockArgs.decode(args.encode()) == args``."""
        ratio = self.expand_ratio
        parts = [
            f"r{self.repeats}",
            f"k{self.kernel_size}",
            f"s{self.strides}{self.strides}",
            f"e{int(ratio) if float(ratio).is_integer() else ratio}",
            f"i{self.input_filters}",
            f"o{self.output_filters}",
        ]
        if self.se_ratio is not None:
            parts.append(f"se{self.se_ratio:g}")
        if not self.id_skip:
            parts.append("noskip")
        return "_".join(parts)


def decode_blocks(strings: Iterable[str]) -> tuple[BlockArgs, ...]:
    """Decode a list of block strings."""
    return tuple(BlockArgs.decode(s) for s in strings)


def encode_blocks(blocks: Iterable[BlockArgs]) -> list[str]:
    """Encode block arguments to their string form."""
    return [b.encode() for b in blocks]


# The NAS-found EfficientNet-B0 baseline (tensorflow/tpu efficientnet_builder.py).
# The paper's Table 1 shows wrong strides for two stages; these are the code's.
EFFICIENTNET_B0_BLOCKS: tuple[BlockArgs, ...] = decode_blocks([
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
])

# EfficientNet-Lite: the same stages without squeeze-and-excitation (edge accelerators).
EFFICIENTNET_LITE_BLOCKS: tuple[BlockArgs, ...] = tuple(
    dataclasses.replace(b, se_ratio=None) for b in EFFICIENTNET_B0_BLOCKS)
