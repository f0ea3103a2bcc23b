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
- ``fbnet``: FBNet's macro-architecture (stem 16, stages of widths 16, 24,
  32, 64, 112, 184, 352, head 1504); an empty stage that changes shape
  becomes a 1x1 projection.

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
    "BUILTIN_SPACES",
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
        ``"first"`` or ``"rest"`` (ResNet, MobileNetV3, OFA, FBNet),
        ``"projection"`` (what stands for an empty FBNet stage),
        ``"dense_layer"`` or ``"transition"`` (DenseNet).
    kernel_size : int or None
        None for a transition.
    expand_ratio : float or None
        None for DenseNet.
    in_channels, out_channels : int
        A dense layer's output includes its concatenated input.
    in_hw : int
        Height (= width) of the input feature map.
    stride : int
    groups : int
        Groups of the 1x1 convolutions (FBNet; 1 elsewhere).
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
    groups: int = 1

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
    block : {"bottleneck", "inverted_residual", "fbnet", "dense"}
        Kind of the searched blocks (``"fbnet"``: an inverted residual whose
        1x1 convs have ``groups`` groups, followed by a channel shuffle, and
        whose expansion conv is there even at ``expand_ratio=1``).
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
    def unit_geometry(self, resolution) -> list[tuple[int, int, int, int]]:
        """``(in_hw, in_channels, out_channels, stride)`` of every unit's first
        block (not for ``"dense"``): a unit always starts from the previous
        unit's width, an empty unit being replaced by its projection."""
        hws = self.unit_input_hw(resolution)
        ins = (self.stem_width, *self.widths[:-1])
        return list(zip(hws, ins, self.widths, self.strides, strict=True))

    def block_spec(self, unit: int, first: bool, combo: tuple, geometry) -> BlockSpec:
        """The spec of a block of ``unit`` (its first one or a later one) taking
        the block choices ``combo`` = ``(kernel_size, expand_ratio[, groups])``."""
        hw, in_channels, width, stride = geometry[unit]
        k, e, *g = combo
        groups = int(g[0]) if g else 1
        if first:
            return BlockSpec(self.name, unit, "first", int(k), float(e), in_channels, width, hw, stride, groups)
        return BlockSpec(
            self.name, unit, "rest", int(k), float(e), width, width, strided(hw, stride), 1, groups
        )

    def projection_spec(self, unit: int, geometry) -> BlockSpec | None:
        """What stands for an empty ``unit``: a 1x1 conv-BN-ReLU projection with
        the unit's stride when the unit changes shape, else nothing (identity)."""
        hw, in_channels, width, stride = geometry[unit]
        if in_channels == width and stride == 1:
            return None
        return BlockSpec(self.name, unit, "projection", 1, None, in_channels, width, hw, stride)

    def arch_specs(self, arch: Mapping, resolution: int) -> list[BlockSpec]:
        """The spec of every block (and transition) of a *canonical* ``arch``.

        The architecture is not validated here:
        :meth:`SearchSpace.arch_block_specs` validates first.
        """
        if self.block == "dense":
            return self._dense_arch_specs(arch, resolution)
        geometry = self.unit_geometry(resolution)
        fields = [arch["kernel_size"], arch["expand_ratio"]]
        if "groups" in arch:
            fields.append(arch["groups"])
        specs: list[BlockSpec] = []
        for unit, d in enumerate(arch["depth"]):
            if d == 0:
                projection = self.projection_spec(unit, geometry)
                specs.extend([projection] if projection is not None else [])
            for b, combo in enumerate(zip(*(f[unit] for f in fields))):
                specs.append(self.block_spec(unit, b == 0, combo, geometry))
        return specs

    def _dense_arch_specs(self, arch: Mapping, resolution: int) -> list[BlockSpec]:
        hws = self.unit_input_hw(resolution)
        name, c, growth = self.name, self.stem_width, self.growth
        specs: list[BlockSpec] = []
        for unit, (d, k, hw) in enumerate(zip(arch["depth"], arch["kernel_size"], hws)):
            for _ in range(d):
                specs.append(BlockSpec(name, unit, "dense_layer", int(k), None, c, c + growth, hw, 1))
                c += growth
            if unit < self.n_units - 1:
                specs.append(BlockSpec(name, unit, "transition", None, None, c, c // 2, hw, 2))
                c //= 2
        return specs

    def all_specs(
        self,
        depth_bounds: Sequence[tuple[int, int]],
        choices: Sequence,
        resolution: int,
        densenet_channel_step: int = 32,
    ) -> list[BlockSpec]:
        """Every distinct block of a space with these depth bounds and choices.

        ``choices`` are the block combinations ``(kernel_size, expand_ratio[,
        groups])``, or the kernel sizes of a dense space.

        Blocks: one spec per (unit, position, choices), position ``"first"``
        (the unit's first block, which may change width and stride) or
        ``"rest"`` (``in == out``, stride 1), then the ``"projection"`` of a
        unit that may be empty, in the row order of
        ``shared/datasets/h200/*_b1_lut.csv``. Dense: a dense layer's cost
        depends on its input channels, which depend on the depths of earlier
        units, so for each unit and kernel size there is one ``"dense_layer"``
        spec per input-channel count on a grid of multiples of
        ``densenet_channel_step`` covering every reachable count (unit 0: 64,
        96, ..., 64 + 19*32), followed by ``"transition"`` specs on the same
        kind of grid over the unit's reachable output channels.
        """
        if len(depth_bounds) != self.n_units:
            raise ValueError(
                f"block_specs: space {self.name!r} has {len(depth_bounds)} units, "
                f"its macro-architecture {self.n_units}"
            )
        if self.block == "dense":
            return self._dense_all_specs(depth_bounds, choices, resolution, densenet_channel_step)
        geometry = self.unit_geometry(resolution)
        specs: list[BlockSpec] = []
        for unit, (dmin, dmax) in enumerate(depth_bounds):
            specs += [self.block_spec(unit, True, combo, geometry) for combo in choices]
            if dmax >= 2:
                specs += [self.block_spec(unit, False, combo, geometry) for combo in choices]
            if dmin == 0 and self.projection_spec(unit, geometry) is not None:
                specs.append(self.projection_spec(unit, geometry))
        return specs

    def _dense_all_specs(self, depth_bounds, kernels, resolution, step) -> list[BlockSpec]:
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"densenet_channel_step must be a positive int, got {step!r}")
        hws = self.unit_input_hw(resolution)
        name, growth = self.name, self.growth
        kernels = [int(k) for k in kernels]
        specs: list[BlockSpec] = []
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
    # FBNet (Wu et al. 2019, Table 1), the HELP tables' fbnet space. A stage may
    # be empty ("skip" everywhere): a shape-changing empty stage is replaced by
    # a 1x1 conv-BN-ReLU projection with its stride (Macro.projection_spec).
    "fbnet": Macro(
        "fbnet",
        "fbnet",
        stem=(("conv_bn", 3, 16, 3, 2, "relu"),),
        head=(
            ("conv_bn", "C", 1504, 1, 1, "relu"),
            ("pool",),
            ("flatten",),
            ("linear", 1504, "N"),
        ),
        stem_width=16,
        n_units=7,
        widths=(16, 24, 32, 64, 112, 184, 352),
        strides=(1, 2, 2, 2, 1, 2, 1),
        activations=("relu",) * 7,
        se=(False,) * 7,
        round_hidden=True,
    ),
}


# The built-in spaces' choices (SearchSpace keyword arguments; their builder
# is esm_sklearn.models:build_from_macro and their macro the one above).
BUILTIN_SPACES: dict[str, dict] = {
    "resnet": dict(
        n_units=4,
        depth=(1, 7),
        block_choices={"kernel_size": (3, 5, 7), "expand_ratio": (0.5, 0.6667, 1.0)},
        description="ESM Table I: bottleneck ResNet, 4 units of 1-7 blocks, widths 256..2048",
    ),
    "mobilenetv3": dict(
        n_units=4,
        depth=(1, 7),
        block_choices={"kernel_size": (3, 5, 7), "expand_ratio": (0.5, 0.6667, 1.0)},
        description="ESM Table I: MobileNetV3 blocks, 4 units of 1-7 blocks, widths 16..128",
    ),
    "densenet": dict(
        n_units=5,
        depth=(1, 20),
        unit_choices={"kernel_size": (1, 3, 5, 7, 9)},
        description="ESM Table I: DenseNet, 5 units of 1-20 layers, one kernel size per unit",
    ),
    "ofa_mobilenetv3": dict(
        n_units=5,
        depth=(2, 4),
        block_choices={"kernel_size": (3, 5, 7), "expand_ratio": (3, 4, 6)},
        global_choices={"resolution": tuple(range(128, 225, 4))},
        description="Once-for-All MobileNetV3 (HELP tables): 5 units of 2-4 blocks, "
        "resolution 128..224",
    ),
    "fbnet": dict(
        n_units=7,
        depth=[(0, 1), (0, 4), (0, 4), (0, 4), (0, 4), (0, 4), (0, 1)],
        block_choices={"kernel_size": (3, 5), "expand_ratio": (1, 3, 6), "groups": (1, 2)},
        block_combinations=[
            (3, 1, 1), (3, 1, 2), (3, 3, 1), (3, 6, 1),
            (5, 1, 1), (5, 1, 2), (5, 3, 1), (5, 6, 1),
        ],
        description="FBNet (HELP tables): 7 stages of at most 1,4,4,4,4,4,1 layers; "
        "skip = no block",
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
