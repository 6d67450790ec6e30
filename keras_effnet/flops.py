"""Multiply-add ("FLOPs") and parameter counting, from a built model or from a ``ModelSpec``.

The paper's "FLOPs" are multiply-adds (Tan & Le 2019, Table 2). The main count, ``flops``, is the
multiply-adds of the layers that hold weights, for ONE image at inference:

- ``Conv2D`` (stem, expand, project, head): ``H_out * W_out * k * k * C_in * C_out / groups``;
- ``DepthwiseConv2D``: ``H_out * W_out * k * k * C``;
- squeeze-and-excitation: its two 1x1 convs on the pooled 1x1 map, ``C_exp*C_se + C_se*C_exp``;
- ``Dense`` (the classifier): ``C_in * C_out``.

Bias additions, batch normalisation (foldable into the convs), activations, the SE multiply, the
residual adds, pooling and the input normalisation are NOT in ``flops``; they are counted apart in
``elementwise`` (one operation per output element; per input element for pooling). Counting only
conv and linear multiply-accumulates is the usual convention of multiply-add counts; docs/scaling.md
compares the results with the paper's figures and explains each gap.

``count_model_flops(model)`` walks a built Keras model's layers and output shapes (any model made
of these layer types). ``count_spec_flops(spec)`` computes the same numbers from the scaled block
table without building anything (milliseconds for L2, where a build takes tens of seconds); a
test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
import math

from keras_effnet import scaling
from keras_effnet.plan import STEM_STRIDE, block_plan
from keras_effnet.scaling import ModelSpec, get_spec

# Per-kind keys of ``FlopsCount.by_kind`` (the parts of the main count).
KINDS = ("conv", "depthwise", "se", "dense")


@dataclasses.dataclass(frozen=True)
class FlopsCount:
    """Multiply-adds and parameters of one model for one image.

    Attributes:
        flops: multiply-adds of conv, depthwise, SE and dense layers (the paper's "FLOPs").
        params: all weights, trainable or not (BN statistics and the input normalisation's 7
            included), as ``keras.Model.count_params``.
        by_kind: ``flops`` split into ``conv``, ``depthwise``, ``se`` and ``dense``.
        elementwise: operations NOT in ``flops``: batch norm, activations, SE multiply, residual
            adds, pooling, input normalisation (one per element).
        resolution: input height/width in pixels.
        feature_size: spatial size (height, width) of the last feature map (before pooling).
        feature_channels: channels of that feature map (the head width).
    """

    flops: int
    params: int
    by_kind: dict
    elementwise: int
    resolution: tuple
    feature_size: tuple
    feature_channels: int


def _same_output(size: int, stride: int) -> int:
    """Spatial output size of a 'same'-padded layer."""
    return int(math.ceil(size / stride))


# -- counting from a built model ----------------------------------------------------------------

def _spatial(shape) -> int:
    """Elements per channel of a [batch, H, W, C] or [batch, C] shape (1 for the latter)."""
    dims = [d for d in shape[1:-1]]
    if any(d is None for d in dims):
        raise ValueError(f"cannot count FLOPs for a dynamic spatial shape {tuple(shape)}; build "
                         "the model with a fixed input_shape, e.g. (224, 224, 3)")
    return int(math.prod(dims)) if dims else 1


def _elements(shape) -> int:
    return _spatial(shape) * int(shape[-1])


def _output_shape(layer):
    output = layer.output
    if isinstance(output, (list, tuple)):
        raise ValueError(f"layer {layer.name!r} has several outputs; cannot count it")
    return tuple(output.shape)


def _input_shape(layer):
    inputs = layer.input
    if isinstance(inputs, (list, tuple)):
        inputs = inputs[0]
    return tuple(inputs.shape)


def count_model_flops(model) -> FlopsCount:
    """Count multiply-adds and parameters by walking ``model``'s layers (see module docstring).

    ``model`` is a functional ``keras.Model`` with a fixed input size (``include_top=True`` or an
    explicit ``input_shape``). Layers whose name contains ``_se_`` count as SE. Unknown layers
    with weights raise ValueError (the count would be silently wrong).
    """
    import keras  # noqa: PLC0415 (keep the analytic counter importable without building)

    from keras_effnet.layers import ImageNormalization, StochasticDepth  # noqa: PLC0415

    by_kind = dict.fromkeys(KINDS, 0)
    elementwise = 0
    resolution = None
    feature = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            shape = tuple(layer.output.shape)
            resolution = tuple(int(d) if d is not None else None for d in shape[1:3])
            continue
        out_shape = _output_shape(layer)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            channels = int(_input_shape(layer)[-1]) * layer.depth_multiplier
            by_kind["depthwise"] += _spatial(out_shape) * kh * kw * channels
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            c_in = int(_input_shape(layer)[-1])
            macs = _spatial(out_shape) * kh * kw * c_in * int(out_shape[-1]) // layer.groups
            by_kind["se" if "_se_" in layer.name else "conv"] += macs
            if layer.activation is not None and layer.activation is not keras.activations.linear:
                elementwise += _elements(out_shape)
            if len(out_shape) == 4 and "_se_" not in layer.name:
                feature = ((int(out_shape[1]), int(out_shape[2])), int(out_shape[-1]))
        elif isinstance(layer, keras.layers.Dense):
            c_in = int(_input_shape(layer)[-1])
            by_kind["dense"] += _spatial(out_shape) * c_in * int(out_shape[-1])
            if layer.activation is not None and layer.activation is not keras.activations.linear:
                elementwise += _elements(out_shape)
        elif isinstance(layer, (keras.layers.GlobalAveragePooling2D,
                                keras.layers.GlobalMaxPooling2D, keras.layers.AveragePooling2D,
                                keras.layers.MaxPooling2D)):
            elementwise += _elements(_input_shape(layer))
        elif isinstance(layer, (keras.layers.Dropout, StochasticDepth, keras.layers.ZeroPadding2D,
                                keras.layers.Reshape, keras.layers.Flatten)):
            continue  # identities at inference, or data movement
        elif layer.weights and not isinstance(layer, (keras.layers.BatchNormalization,
                                                      keras.layers.Normalization,
                                                      ImageNormalization)):
            raise ValueError(f"count_model_flops does not know layer {layer.name!r} of type "
                             f"{type(layer).__name__}, which has weights")
        else:
            # BatchNormalization, Activation, Multiply, Add, input normalisation: per element.
            elementwise += _elements(out_shape)
    if feature is None:
        raise ValueError(f"model {model.name!r} has no Conv2D layer; nothing to count")
    return FlopsCount(flops=sum(by_kind.values()), params=int(model.count_params()),
                      by_kind=by_kind, elementwise=elementwise, resolution=resolution,
                      feature_size=feature[0], feature_channels=feature[1])


# -- counting from the spec (no model built) ---------------------------------------------------

class _Tally:
    def __init__(self):
        self.by_kind = dict.fromkeys(KINDS, 0)
        self.params = 0
        self.elementwise = 0

    def conv(self, height, width, kernel, c_in, c_out, kind="conv", bias=False):
        self.by_kind[kind] += height * width * kernel * kernel * c_in * c_out
        self.params += kernel * kernel * c_in * c_out + (c_out if bias else 0)

    def batch_norm(self, height, width, channels):
        self.params += 4 * channels  # gamma, beta, moving mean, moving variance
        self.elementwise += height * width * channels


def count_spec_flops(spec: ModelSpec | str, resolution: int | None = None,
                     include_top: bool = True, classes: int = 1000,
                     include_preprocessing: bool = True) -> FlopsCount:
    """Multiply-adds and parameters of ``build_model(spec, ...)`` computed from the block table.

    Equals ``count_model_flops`` of the built model (same conventions), in milliseconds.
    ``resolution`` defaults to the spec's. Works for any ``ModelSpec``, including user tables.
    """
    spec = get_spec(spec)
    size = int(resolution or spec.resolution)
    if size < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    t = _Tally()
    if include_preprocessing and spec.normalization != "none":
        t.params += 7  # mean (3), variance (3), count: keras.applications' Normalization layout
        t.elementwise += size * size * 3
    height = _same_output(size, STEM_STRIDE)
    stem = spec.stem_channels()
    t.conv(height, height, 3, 3, stem)
    t.batch_norm(height, height, stem)
    t.elementwise += height * height * stem  # activation
    channels = stem
    for block in block_plan(spec):
        expanded = block.expanded_channels
        if block.has_expand:
            t.conv(height, height, 1, block.input_channels, expanded)
            t.batch_norm(height, height, expanded)
            t.elementwise += height * height * expanded
        height = _same_output(height, block.stride)
        k = block.kernel_size
        t.by_kind["depthwise"] += height * height * k * k * expanded
        t.params += k * k * expanded
        t.batch_norm(height, height, expanded)
        t.elementwise += height * height * expanded
        if block.has_se:
            reduced = block.se_channels
            t.elementwise += height * height * expanded  # squeeze (global mean)
            t.conv(1, 1, 1, expanded, reduced, kind="se", bias=True)
            t.conv(1, 1, 1, reduced, expanded, kind="se", bias=True)
            t.elementwise += reduced + expanded  # swish, sigmoid
            t.elementwise += height * height * expanded  # excite (multiply)
        t.conv(height, height, 1, expanded, block.output_channels)
        t.batch_norm(height, height, block.output_channels)
        if block.skip:
            t.elementwise += height * height * block.output_channels  # residual add
        channels = block.output_channels
    head = spec.head_channels()
    t.conv(height, height, 1, channels, head)
    t.batch_norm(height, height, head)
    t.elementwise += height * height * head
    if include_top:
        t.elementwise += height * height * head  # global average pool
        t.by_kind["dense"] += head * classes
        t.params += (head + 1) * classes
        t.elementwise += classes  # softmax
    return FlopsCount(flops=sum(t.by_kind.values()), params=t.params, by_kind=t.by_kind,
                      elementwise=t.elementwise, resolution=(size, size),
                      feature_size=(height, height), feature_channels=head)


def flops_ratio(spec: ModelSpec, base: ModelSpec) -> float:
    """Counted multiply-adds of ``spec`` over those of ``base`` (each at its own resolution)."""
    return count_spec_flops(spec).flops / count_spec_flops(base).flops


@dataclasses.dataclass(frozen=True)
class ScalingReport:
    """What compound scaling by ``phi`` achieved, in counted multiply-adds.

    Attributes:
        spec: the scaled model.
        phi, alpha, beta, gamma: the scaling used.
        base_flops, flops: counted multiply-adds of the base and the scaled model.
        ratio: ``flops / base_flops``, what the rounding of channels, repeats and resolution gave.
        theoretical: ``(alpha * beta**2 * gamma**2) ** phi``, the paper's d * w**2 * r**2.
        target: ``2 ** phi``, the paper's aim (alpha * beta**2 * gamma**2 ~= 2).
    """

    spec: ModelSpec
    phi: float
    alpha: float
    beta: float
    gamma: float
    base_flops: int
    flops: int
    ratio: float
    theoretical: float
    target: float

    @property
    def ratio_vs_target(self) -> float:
        """``ratio / 2**phi``: 1.0 when scaling hit the paper's FLOPs target exactly."""
        return self.ratio / self.target


def scaling_report(base=None, phi: float = 1.0, alpha: float = scaling.ALPHA,
                   beta: float = scaling.BETA, gamma: float = scaling.GAMMA,
                   resolution_divisor: int = 8) -> ScalingReport:
    """Scale ``base`` (a ``ModelSpec``, variant name or block table; default B0) by ``phi`` with
    ``scaling.scale_spec`` and compare the counted FLOPs growth with ``2 ** phi``."""
    base_spec = scaling.as_base_spec(base)
    spec = scaling.scale_spec(base, phi, alpha, beta, gamma, resolution_divisor=resolution_divisor)
    base_flops = count_spec_flops(base_spec).flops
    flops = count_spec_flops(spec).flops
    return ScalingReport(spec=spec, phi=phi, alpha=alpha, beta=beta, gamma=gamma,
                         base_flops=base_flops, flops=flops, ratio=flops / base_flops,
                         theoretical=scaling.flops_multiplier(phi, alpha, beta, gamma),
                         target=2.0 ** phi)


def format_count(value: float, unit: str = "") -> str:
    """``390_000_000`` -> ``0.39B``; ``5_330_571`` -> ``5.33M`` (3 significant digits)."""
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


# -- the model table -----------------------------------------------------------------------------

# Multiply-adds and parameters of B0..B7 from the paper's Table 2 (Tan & Le 2019), parameters of
# B8 (AdvProp, Xie et al. 2020) and L2 (Noisy Student, Xie et al. 2020), and of Lite0..4
# (tensorflow/tpu models/official/efficientnet/lite/README.md).
PAPER_FLOPS = {"efficientnet-b0": 390_000_000, "efficientnet-b1": 700_000_000,
               "efficientnet-b2": 1_000_000_000, "efficientnet-b3": 1_800_000_000,
               "efficientnet-b4": 4_200_000_000, "efficientnet-b5": 9_900_000_000,
               "efficientnet-b6": 19_000_000_000, "efficientnet-b7": 37_000_000_000}
PAPER_PARAMS = {"efficientnet-b0": 5_300_000, "efficientnet-b1": 7_800_000,
                "efficientnet-b2": 9_200_000, "efficientnet-b3": 12_000_000,
                "efficientnet-b4": 19_000_000, "efficientnet-b5": 30_000_000,
                "efficientnet-b6": 43_000_000, "efficientnet-b7": 66_000_000,
                "efficientnet-b8": 87_800_000, "efficientnet-l2": 480_000_000,
                "efficientnet-lite0": 4_700_000, "efficientnet-lite1": 5_400_000,
                "efficientnet-lite2": 6_100_000, "efficientnet-lite3": 8_200_000,
                "efficientnet-lite4": 13_000_000}

TABLE_COLUMNS = ("model", "width", "depth", "resolution", "params", "flops", "elementwise",
                 "feature_size", "paper_params", "paper_flops", "flops_vs_paper_pct")


def table_row(spec: ModelSpec | str, count: str = "model", classes: int = 1000) -> dict:
    """One row of the model table for ``spec`` at its own resolution, with the classifier.

    ``count``: ``"model"`` builds the Keras model and walks it (``count_model_flops``);
    ``"spec"`` computes the same numbers from the block table (``count_spec_flops``).
    """
    spec = spec if isinstance(spec, ModelSpec) else get_spec(spec)
    if count == "model":
        import keras  # noqa: PLC0415

        from keras_effnet.model import EfficientNet  # noqa: PLC0415 (imports keras)

        keras.backend.clear_session()
        counted = count_model_flops(EfficientNet(spec, include_top=True, classes=classes))
        keras.backend.clear_session()
    elif count == "spec":
        counted = count_spec_flops(spec, classes=classes)
    else:
        raise ValueError(f"count must be 'model' or 'spec', got {count!r}")
    paper_flops = PAPER_FLOPS.get(spec.name)
    height, width = counted.feature_size
    return dict(
        model=spec.name, width=round(spec.width, 4), depth=round(spec.depth, 4),
        resolution=spec.resolution, params=counted.params, flops=counted.flops,
        elementwise=counted.elementwise,
        feature_size=f"{height}x{width}x{counted.feature_channels}",
        paper_params=PAPER_PARAMS.get(spec.name), paper_flops=paper_flops,
        flops_vs_paper_pct=(round(100.0 * (counted.flops / paper_flops - 1.0), 2)
                            if paper_flops else None))


def format_table(rows: list[dict], fmt: str = "markdown") -> str:
    """The rows as a Markdown table (human units) or CSV (integers, ``TABLE_COLUMNS``)."""
    if fmt == "csv":
        import csv  # noqa: PLC0415
        import io  # noqa: PLC0415

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(TABLE_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in TABLE_COLUMNS})
        return buffer.getvalue()
    if fmt != "markdown":
        raise ValueError(f"format must be 'markdown' or 'csv', got {fmt!r}")
    lines = ["| model | width | depth | resolution | params | multiply-adds (FLOPs) | "
             "paper params | paper FLOPs | FLOPs vs paper | final feature map | "
             "elementwise ops (not in FLOPs) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for row in rows:
        paper_params = format_count(row["paper_params"]) if row.get("paper_params") else ""
        paper_flops = f"{row['paper_flops'] / 1e9:.3g}B" if row.get("paper_flops") else ""
        diff = row.get("flops_vs_paper_pct")
        lines.append(
            f"| {row['model']} | {row['width']:g} | {row['depth']:g} | {row['resolution']} | "
            f"{row['params']:,} | {row['flops'] / 1e9:.3f}B ({row['flops']:,}) | "
            f"{paper_params} | {paper_flops} | {'' if diff is None else f'{diff:+.1f}%'} | "
            f"{row['feature_size']} | {row['elementwise'] / 1e9:.3f}B |")
    return "\n".join(lines) + "\n"
