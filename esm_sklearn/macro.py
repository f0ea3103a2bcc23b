"""Torch-free facts of the built-in macro-architectures, and their block specs.

One :class:`Macro` per built-in space describes the fixed part of its networks
(stem, unit widths and strides, activations, squeeze-excite flags, head) as
plain data; :meth:`Macro.arch_specs` and :meth:`Macro.all_specs` turn an
architecture (or a whole space) into :class:`BlockSpec` objects, the blocks on
their real input shapes. :mod:`esm_sklearn.models` turns the same data into
``torch.nn.Module`` objects, :class:`~esm_sklearn.encoders.LookupTableEncoder`
reads the DenseNet geometry from here, and the parameter / FLOP counts of
:class:`~esm_sklearn.spaces.SearchSpace` are computed from it, so the three
cannot disagree.

The descriptions reproduce the models timed in ``shared/datasets/h200`` and
the HELP tables:

- ``resnet``: 3-conv stem and max-pool, 4 units of bottleneck blocks
  (widths 256, 512, 1024, 2048), global pool, linear head.
- ``mobilenetv3``: conv stem and one fixed inverted residual block, 4 units of
  inverted residual blocks (widths 16, 32, 64, 128; squeeze-excite in units
  1-3), conv 576 + linear 1024 head.
- ``densenet``: 7x7 stem and max-pool, 5 dense units (growth 32) with
  transitions between them, BN-ReLU-pool-linear head.
- ``ofa_mobilenetv3``: the Once-for-All MobileNetV3 (the HELP tables' space).

This module imports nothing from the package. Functions that need a model
(:meth:`BlockSpec.build`) name their builder as a dotted path
(``"esm_sklearn.models:build_block"``) resolved by :func:`resolve_callable`
when called, the same mechanism a :class:`~esm_sklearn.spaces.SearchSpace`
uses for its model builder, so the import graph stays acyclic.
"""

from __future__ import annotations

import importlib
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "BLOCK_BUILDER",
    "MACROS",
    "BlockSpec",
    "Macro",
    "get_macro",
    "make_divisible",
    "resolve_callable",
]

# The function building a BlockSpec into a torch module (see resolve_callable).
BLOCK_BUILDER = "esm_sklearn.models:build_block"


def resolve_callable(target) -> Callable:
    """A callable, or the one named by ``"package.module:attribute"``.

    The named module is imported when this is called, which is how torch-free
    code (a space, a block spec) refers to torch-backed builders without
    importing them.

    Parameters
    ----------
    target : callable or str

    Returns
    -------
    callable

    Examples
    --------
    >>> resolve_callable("math:sqrt")(9.0)
    3.0
    """
    if callable(target):
        return target
    if not isinstance(target, str) or target.count(":") != 1:
        raise ValueError(
            f"a builder must be a callable or a 'package.module:function' string, got {target!r}"
        )
    module_name, attribute = target.split(":")
    try:
        obj = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot resolve builder {target!r}: {exc}") from None
    if not callable(obj):
        raise ValueError(f"builder {target!r} is not callable")
    return obj


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor``, never below 90% of ``v``.

    The rounding of MobileNet / Once-for-All channel counts.

    Parameters
    ----------
    v : float
        Channel count to round.
    divisor : int
        The result is a multiple of this.
    min_value : int, optional
        Smallest result (default ``divisor``).

    Returns
    -------
    int

    Examples
    --------
    >>> make_divisible(16 * 6 * 0.6667), make_divisible(256 / 4 * 0.6667), make_divisible(12)
    (64, 40, 16)
    """
    if divisor < 1:
        raise ValueError(f"make_divisible: divisor must be >= 1, got {divisor!r}")
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


def strided(hw: int, stride: int) -> int:
    """Output size of a conv/pool with odd kernel k, padding k//2 and this stride."""
    return (hw - 1) // stride + 1


# ---------------------------------------------------------------- block specs
@dataclass(frozen=True)
class BlockSpec:
    """One block (or DenseNet transition) on its real input shape.

    The fields match the columns of ``shared/datasets/h200/*_b1_lut.csv``.

    Attributes
    ----------
    space : str
    unit : int
        0-based unit; a DenseNet transition carries the unit it follows.
    position : str
        ``"first"`` or ``"rest"`` (ResNet, MobileNetV3, OFA), ``"dense_layer"``
        or ``"transition"`` (DenseNet).
    kernel_size : int or None
        None for a transition.
    expand_ratio : float or None
        None for DenseNet.
    in_channels, out_channels : int
        A dense layer's output includes its concatenated input.
    in_hw : int
        Height (= width) of the input feature map.
    stride : int
    """

    space: str
    unit: int
    position: str
    kernel_size: int | None
    expand_ratio: float | None
    in_channels: int
    out_channels: int
    in_hw: int
    stride: int

    @property
    def out_hw(self) -> int:
        """Height (= width) of the output feature map."""
        if self.position == "transition":
            return self.in_hw // 2
        return strided(self.in_hw, self.stride)

    def input_shape(self, batch_size: int = 1) -> tuple[int, int, int, int]:
        """``(batch_size, in_channels, in_hw, in_hw)``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        return (batch_size, self.in_channels, self.in_hw, self.in_hw)

    def build(self):
        """The block as a ``torch.nn.Module``, exactly as used inside the full model.

        Calls :data:`BLOCK_BUILDER` (``esm_sklearn.models.build_block``), which
        imports torch.
        """
        return resolve_callable(BLOCK_BUILDER)(self)


# ------------------------------------------------------------ macro facts
# Stem and head layers are tuples: ("conv_bn", in, out, kernel, stride, act),
# ("conv", in, out, kernel, stride, bias), ("bn", channels), ("act", name),
# ("maxpool", kernel, stride), ("pool",) (global average), ("flatten",),
# ("linear", in, out) and ("inverted_residual", in, out, kernel, hidden,
# stride, act). In a head, "C" stands for the last unit's output channels and
# "N" for the number of classes. Convolutions and pools pad kernel // 2.
@dataclass(frozen=True)
class Macro:
    """The fixed part of a built-in space's networks.

    Attributes
    ----------
    name : str
        The space.
    block : {"bottleneck", "inverted_residual", "dense"}
        Kind of the searched blocks.
    stem, head : tuple of tuple
        Layers before the first and after the last unit (see the module
        source for the layer tuples).
    stem_width : int
        Channels out of the stem.
    widths, strides : tuple of int
        Output width and stride of every unit (not for ``"dense"``).
    activations, se : tuple
        Activation name and squeeze-excite flag of every unit's blocks
        (inverted residuals).
    expand_base : float
        Inverted residual hidden width: ``make_divisible(in * expand_base *
        expand_ratio)``, with the product rounded first when ``round_hidden``.
    round_hidden : bool
    growth, bottleneck : int
        Dense layers: channels each adds, and width of its 1x1 conv.
    n_units : int
    """

    name: str
    block: str
    stem: tuple
    head: tuple
    stem_width: int
    n_units: int
    widths: tuple = ()
    strides: tuple = ()
    activations: tuple = ()
    se: tuple = ()
    expand_base: float = 1.0
    round_hidden: bool = False
    growth: int = 0
    bottleneck: int = 0

    # ------------------------------------------------------------ geometry
    def hidden_channels(self, in_channels: int, expand_ratio: float) -> int:
        """Hidden width of an inverted residual block."""
        v = in_channels * self.expand_base * expand_ratio
        return make_divisible(round(v) if self.round_hidden else v, 8)

    def unit_input_hw(self, resolution) -> list[int]:
        """Input height of every unit at ``resolution``; raises if a map vanishes."""
        if (
            isinstance(resolution, bool)
            or not isinstance(resolution, numbers.Integral)
            or resolution < 1
        ):
            raise ValueError(f"{self.name}: resolution must be a positive int, got {resolution!r}")
        hw = int(resolution)
        for layer in self.stem:
            hw = strided(hw, _layer_stride(layer))
        out = [hw]
        if self.block == "dense":
            for _ in range(self.n_units - 1):
                out.append(out[-1] // 2)  # transition avg-pool 2x2 floors (7 -> 3 at 224)
            if out[-1] < 1:
                smallest = 2 ** (self.n_units - 1)  # invert the stem's downsampling
                for layer in reversed(self.stem):
                    smallest = (smallest - 1) * _layer_stride(layer) + 1
                raise ValueError(
                    f"{self.name}: resolution {resolution} is too small: its "
                    f"{self.n_units - 1} transitions halve the feature map to 0 (the smallest "
                    f"working resolution is {smallest})"
                )
            return out
        for stride in self.strides[:-1]:
            out.append(strided(out[-1], stride))
        return out

    def head_layers(self, channels: int, num_classes: int) -> tuple:
        """The head with its placeholders filled in."""
        fill = {"C": channels, "N": num_classes}
        return tuple(tuple(fill.get(v, v) if isinstance(v, str) else v for v in layer)
                     for layer in self.head)

    # --------------------------------------------------------------- specs
    def arch_specs(self, arch: Mapping, resolution: int) -> list[BlockSpec]:
        """The spec of every block (and transition) of a *canonical* ``arch``.

        The architecture is not validated here:
        :meth:`SearchSpace.arch_block_specs` validates first.
        """
        hws = self.unit_input_hw(resolution)
        name = self.name
        specs: list[BlockSpec] = []
        if self.block == "dense":
            c, growth = self.stem_width, self.growth
            for unit, (d, k, hw) in enumerate(zip(arch["depth"], arch["kernel_size"], hws)):
                k = int(k)
                for _ in range(d):
                    specs.append(BlockSpec(name, unit, "dense_layer", k, None, c, c + growth, hw, 1))
                    c += growth
                if unit < self.n_units - 1:
                    specs.append(BlockSpec(name, unit, "transition", None, None, c, c // 2, hw, 2))
                    c //= 2
            return specs
        in_channels = self.stem_width
        for unit, (hw, width, stride) in enumerate(zip(hws, self.widths, self.strides)):
            kernels, ratios = arch["kernel_size"][unit], arch["expand_ratio"][unit]
            for b, (k, e) in enumerate(zip(kernels, ratios)):
                if b == 0:
                    specs.append(
                        BlockSpec(name, unit, "first", int(k), float(e), in_channels, width, hw, stride)
                    )
                    hw = strided(hw, stride)
                else:
                    specs.append(BlockSpec(name, unit, "rest", int(k), float(e), width, width, hw, 1))
            in_channels = width
        return specs

    def all_specs(
        self,
        depth_bounds: Sequence[tuple[int, int]],
        choices: Sequence,
        resolution: int,
        densenet_channel_step: int = 32,
    ) -> list[BlockSpec]:
        """Every distinct block of a space with these depth bounds and choices.

        ``choices`` are the ``(kernel_size, expand_ratio)`` block combinations,
        or the kernel sizes of a dense space. See
        :meth:`SearchSpace.block_specs` for the order and the DenseNet grid.
        """
        hws = self.unit_input_hw(resolution)
        if len(depth_bounds) != len(hws):
            raise ValueError(
                f"block_specs: space {self.name!r} has {len(depth_bounds)} units, "
                f"its macro-architecture {len(hws)}"
            )
        name = self.name
        specs: list[BlockSpec] = []
        if self.block == "dense":
            step = densenet_channel_step
            if isinstance(step, bool) or not isinstance(step, int) or step < 1:
                raise ValueError(f"densenet_channel_step must be a positive int, got {step!r}")
            kernels = [int(k) for k in choices]
            growth = self.growth
            low = high = self.stem_width
            for unit, (hw, (dmin, dmax)) in enumerate(zip(hws, depth_bounds, strict=True)):
                if dmax >= 1:
                    for c in _channel_grid(low, high + growth * (dmax - 1), step):
                        specs += [
                            BlockSpec(name, unit, "dense_layer", k, None, c, c + growth, hw, 1)
                            for k in kernels
                        ]
                low, high = low + growth * dmin, high + growth * dmax
                if unit < len(hws) - 1:
                    specs += [
                        BlockSpec(name, unit, "transition", None, None, c, c // 2, hw, 2)
                        for c in _channel_grid(low, high, step)
                    ]
                    low, high = low // 2, high // 2
            return specs
        combos = [(int(k), float(e)) for k, e in choices]
        in_channels = self.stem_width
        for unit, (hw, width, stride, (_, dmax)) in enumerate(
            zip(hws, self.widths, self.strides, depth_bounds, strict=True)
        ):
            specs += [
                BlockSpec(name, unit, "first", k, e, in_channels, width, hw, stride)
                for k, e in combos
            ]
            if dmax >= 2:
                rest_hw = strided(hw, stride)
                specs += [
                    BlockSpec(name, unit, "rest", k, e, width, width, rest_hw, 1) for k, e in combos
                ]
            in_channels = width
        return specs


def _layer_stride(layer: tuple) -> int:
    kind = layer[0]
    if kind in ("conv_bn", "conv"):
        return layer[4]
    if kind == "maxpool":
        return layer[2]
    if kind == "inverted_residual":
        return layer[5]
    return 1


def _channel_grid(low: int, high: int, step: int) -> list[int]:
    """Multiples of ``step`` from the one at or below ``low`` to the one at or above ``high``
    (starting at ``low`` itself when ``low < step``)."""
    start = low // step * step
    stop = -(-high // step) * step
    return ([low] if start == 0 else []) + list(range(start or step, stop + 1, step))


MACROS: dict[str, Macro] = {
    "resnet": Macro(
        "resnet",
        "bottleneck",
        stem=(
            ("conv_bn", 3, 32, 3, 2, "relu"),
            ("conv_bn", 32, 32, 3, 1, "relu"),
            ("conv_bn", 32, 64, 3, 1, "relu"),
            ("maxpool", 3, 2),
        ),
        head=(("pool",), ("flatten",), ("linear", "C", "N")),
        stem_width=64,
        n_units=4,
        widths=(256, 512, 1024, 2048),
        strides=(1, 2, 2, 2),
    ),
    "mobilenetv3": Macro(
        "mobilenetv3",
        "inverted_residual",
        stem=(
            ("conv_bn", 3, 16, 3, 2, "hswish"),
            ("inverted_residual", 16, 16, 3, 16, 1, "hswish"),
        ),
        head=(
            ("conv_bn", "C", 576, 1, 1, "hswish"),
            ("pool",),
            ("flatten",),
            ("linear", 576, 1024),
            ("act", "hswish"),
            ("linear", 1024, "N"),
        ),
        stem_width=16,
        n_units=4,
        widths=(16, 32, 64, 128),
        strides=(2, 2, 2, 2),
        activations=("hswish",) * 4,
        se=(False, True, True, True),
        expand_base=6.0,
    ),
    "densenet": Macro(
        "densenet",
        "dense",
        stem=(
            ("conv", 3, 64, 7, 2, False),
            ("bn", 64),
            ("act", "relu"),
            ("maxpool", 3, 2),
        ),
        head=(("bn", "C"), ("act", "relu"), ("pool",), ("flatten",), ("linear", "C", "N")),
        stem_width=64,
        n_units=5,
        growth=32,
        bottleneck=128,
    ),
    "ofa_mobilenetv3": Macro(
        "ofa_mobilenetv3",
        "inverted_residual",
        stem=(
            ("conv_bn", 3, 16, 3, 2, "hswish"),
            ("inverted_residual", 16, 16, 3, 16, 1, "relu"),
        ),
        head=(
            ("conv_bn", "C", 960, 1, 1, "hswish"),
            ("pool",),
            ("conv", 960, 1280, 1, 1, False),
            ("act", "hswish"),
            ("flatten",),
            ("linear", 1280, "N"),
        ),
        stem_width=16,
        n_units=5,
        widths=(24, 40, 80, 112, 160),
        strides=(2, 2, 2, 1, 2),
        activations=("relu", "relu", "hswish", "hswish", "hswish"),
        se=(False, True, False, True, True),
        round_hidden=True,
    ),
}


def get_macro(name: str) -> Macro:
    """The macro-architecture of a built-in space.

    Raises
    ------
    ValueError
        For a space without one, listing those that have one.

    Examples
    --------
    >>> get_macro("densenet").growth, get_macro("resnet").widths
    (32, (256, 512, 1024, 2048))
    """
    if name not in MACROS:
        raise ValueError(
            f"no macro-architecture for space {name!r}; the arch's 'space' must be one of "
            f"{list(MACROS)}"
        )
    return MACROS[name]
