"""PyTorch builders of the built-in macro-architectures, and per-block specs.

The builders reproduce the models timed in ``shared/datasets/h200`` (see its
README, "Macro-architectures used"), so timings taken with this package are
comparable with that data:

- ``resnet``: 3-conv stem and max-pool, 4 units of bottleneck blocks
  (widths 256, 512, 1024, 2048), global pool, linear head.
- ``mobilenetv3``: conv stem and one fixed inverted residual block, 4 units of
  inverted residual blocks (widths 16, 32, 64, 128; squeeze-excite in units
  1-3), conv 576 + linear 1024 head.
- ``densenet``: 7x7 stem and max-pool, 5 dense units (growth 32) with
  transitions between them, BN-ReLU-pool-linear head.
- ``ofa_mobilenetv3``: the Once-for-All MobileNetV3 (the HELP tables' space).

Every model is a :class:`StagedNet` whose blocks are built from
:class:`BlockSpec` objects, the same specs :func:`block_specs` lists for
lookup-table profiling, so a profiled block is exactly the module used inside
the full model. Models are built on the CPU in training mode, like any
``torch.nn.Module``; call ``.eval()`` before timing.

This module imports nothing else from the package at import time
(``block_specs`` given a space *name* looks it up in :mod:`esm_sklearn.spaces`
lazily).
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "BlockSpec",
    "Bottleneck",
    "DenseLayer",
    "InvertedResidual",
    "SqueezeExcite",
    "StagedNet",
    "Transition",
    "arch_block_specs",
    "block_specs",
    "build_densenet",
    "build_mobilenetv3",
    "build_ofa_mobilenetv3",
    "build_resnet",
    "make_divisible",
]

# --------------------------------------------------------- macro-architectures
RESNET_STEM_WIDTH = 64
RESNET_WIDTHS = (256, 512, 1024, 2048)
RESNET_STRIDES = (1, 2, 2, 2)

MOBILENETV3_STEM_WIDTH = 16
MOBILENETV3_WIDTHS = (16, 32, 64, 128)
MOBILENETV3_STRIDES = (2, 2, 2, 2)
MOBILENETV3_EXPAND = 6  # hidden = round8(in * 6 * expand_ratio)
MOBILENETV3_SE_UNITS = (1, 2, 3)
MOBILENETV3_HEAD = (576, 1024)

DENSENET_STEM_WIDTH = 64
DENSENET_GROWTH = 32
DENSENET_BOTTLENECK = 128  # 4 * growth
DENSENET_UNITS = 5

OFA_STEM_WIDTH = 16
OFA_WIDTHS = (24, 40, 80, 112, 160)
OFA_STRIDES = (2, 2, 2, 1, 2)
OFA_ACTIVATIONS = ("relu", "relu", "hswish", "hswish", "hswish")
OFA_SE = (False, True, False, True, True)
OFA_HEAD = (960, 1280)

_BLOCK_SPACES = ("resnet", "mobilenetv3", "ofa_mobilenetv3")
_SPACES = (*_BLOCK_SPACES, "densenet")


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


# ------------------------------------------------------------------- modules
def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"unknown activation {name!r}; use 'relu' or 'hswish'")


def _conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    act: str | None = None,
) -> nn.Sequential:
    """Conv (padding k//2, no bias) -> BN [-> activation]."""
    layers = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            kernel_size // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
    ]
    if act is not None:
        layers.append(_activation(act))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """ResNet bottleneck: conv1x1 -> conv kxk (stride) -> conv1x1, plus shortcut.

    ``mid_channels = make_divisible(out_channels / 4 * expand_ratio, 8)``; a
    shortcut that changes shape is avg-pool (if strided) + conv1x1 + BN.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        expand_ratio: float,
        stride: int = 1,
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.mid_channels = make_divisible(out_channels / 4 * expand_ratio, 8)
        self.conv1 = _conv_bn(in_channels, self.mid_channels, 1, act="relu")
        self.conv2 = _conv_bn(self.mid_channels, self.mid_channels, kernel_size, stride, act="relu")
        self.conv3 = _conv_bn(self.mid_channels, out_channels, 1)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = None
        else:
            layers = []
            if stride > 1:
                # ceil_mode keeps the shortcut the same size as the padded conv on odd inputs.
                layers.append(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False))
            layers += [
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            ]
            self.shortcut = nn.Sequential(*layers)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class SqueezeExcite(nn.Module):
    """Squeeze-excite as in MobileNetV3 / OFA: pool, conv1x1 reduce (channels//4,
    rounded to 8), ReLU, conv1x1 expand, hard sigmoid, scale."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        mid = make_divisible(channels // reduction, 8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, mid, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(mid, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNet block: conv1x1 expand -> depthwise kxk (stride) -> [SE] -> conv1x1 project.

    BN follows every conv; the expand and depthwise convs are followed by the
    activation, the projection is linear. The expand conv is left out when
    ``hidden_channels == in_channels``. Residual when ``stride == 1`` and
    ``in_channels == out_channels``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        hidden_channels: int,
        stride: int = 1,
        act: str = "hswish",
        use_se: bool = False,
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.hidden_channels = hidden_channels
        self.expand = (
            None
            if hidden_channels == in_channels
            else _conv_bn(in_channels, hidden_channels, 1, act=act)
        )
        self.depthwise = _conv_bn(
            hidden_channels, hidden_channels, kernel_size, stride, groups=hidden_channels, act=act
        )
        self.se = SqueezeExcite(hidden_channels) if use_se else None
        self.project = _conv_bn(hidden_channels, out_channels, 1)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.use_residual else y


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (->128) - BN-ReLU-conv kxk (->32), concatenated to the input.

    Output channels: ``in_channels + growth``.
    """

    def __init__(
        self,
        in_channels: int,
        kernel_size: int,
        growth: int = DENSENET_GROWTH,
        bottleneck: int = DENSENET_BOTTLENECK,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, in_channels + growth
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bottleneck, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bottleneck)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            bottleneck, growth, kernel_size, padding=kernel_size // 2, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.relu1(self.norm1(x)))
        y = self.conv2(self.relu2(self.norm2(y)))
        return torch.cat([x, y], 1)


class Transition(nn.Sequential):
    """DenseNet transition: BN-ReLU-conv1x1 (halving channels) + avg-pool 2x2."""

    def __init__(self, in_channels: int):
        out = in_channels // 2
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out, 1, bias=False),
            nn.AvgPool2d(2, 2),
        )
        self.in_channels, self.out_channels = in_channels, out


class StagedNet(nn.Module):
    """stem -> unit 0 [-> transition 0] -> unit 1 ... -> head.

    Attributes
    ----------
    stem, head : nn.Sequential
    units : nn.ModuleList of nn.Sequential
        One sequence of blocks per unit.
    transitions : nn.ModuleList or None
        Modules between consecutive units (DenseNet).
    specs : list of BlockSpec
        The spec of every block and transition, in execution order.
    arch : dict
        The architecture the model was built from.
    """

    def __init__(self, stem, units, head, transitions=None, specs=None, arch=None):
        super().__init__()
        self.stem = stem
        self.units = nn.ModuleList(units)
        self.transitions = None if transitions is None else nn.ModuleList(transitions)
        self.head = head
        self.specs = list(specs or [])
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        n_trans = 0 if self.transitions is None else len(self.transitions)
        for i, unit in enumerate(self.units):
            x = unit(x)
            if i < n_trans:
                x = self.transitions[i](x)
        return self.head(x)


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
        return _strided(self.in_hw, self.stride)

    def input_shape(self, batch_size: int = 1) -> tuple[int, int, int, int]:
        """``(batch_size, in_channels, in_hw, in_hw)``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        return (batch_size, self.in_channels, self.in_hw, self.in_hw)

    def build(self) -> nn.Module:
        """The block as a ``torch.nn.Module``, exactly as used inside the full model."""
        s, k, e = self.space, self.kernel_size, self.expand_ratio
        if s == "resnet":
            return Bottleneck(self.in_channels, self.out_channels, k, e, self.stride)
        if s == "mobilenetv3":
            hidden = make_divisible(self.in_channels * MOBILENETV3_EXPAND * e, 8)
            return InvertedResidual(
                self.in_channels,
                self.out_channels,
                k,
                hidden,
                self.stride,
                act="hswish",
                use_se=self.unit in MOBILENETV3_SE_UNITS,
            )
        if s == "ofa_mobilenetv3":
            hidden = make_divisible(round(self.in_channels * e), 8)
            return InvertedResidual(
                self.in_channels,
                self.out_channels,
                k,
                hidden,
                self.stride,
                act=OFA_ACTIVATIONS[self.unit],
                use_se=OFA_SE[self.unit],
            )
        if s == "densenet":
            if self.position == "transition":
                return Transition(self.in_channels)
            return DenseLayer(self.in_channels, k)
        raise ValueError(f"BlockSpec: no block builder for space {s!r}; known: {list(_SPACES)}")


def _strided(hw: int, stride: int) -> int:
    # Output size of a conv/pool with odd kernel k, padding k//2 and this stride.
    return (hw - 1) // stride + 1


def _unit_input_hw(space: str, resolution: int) -> list[int]:
    """Input height of every unit at ``resolution``; raises if a map vanishes."""
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, numbers.Integral)
        or resolution < 1
    ):
        raise ValueError(f"{space}: resolution must be a positive int, got {resolution!r}")
    if space == "resnet":
        hw = _strided(_strided(resolution, 2), 2)  # conv stem /2, max-pool /2
        strides = RESNET_STRIDES
    elif space == "mobilenetv3":
        hw, strides = _strided(resolution, 2), MOBILENETV3_STRIDES
    elif space == "ofa_mobilenetv3":
        hw, strides = _strided(resolution, 2), OFA_STRIDES
    elif space == "densenet":
        hw = _strided(_strided(resolution, 2), 2)
        out = [hw]
        for _ in range(DENSENET_UNITS - 1):
            out.append(out[-1] // 2)  # transition avg-pool 2x2 floors (7 -> 3 at 224)
        if out[-1] < 1:
            raise ValueError(
                f"densenet: resolution {resolution} is too small: its 4 transitions halve the "
                f"feature map to 0 (the smallest working resolution is 61)"
            )
        return out
    else:
        raise ValueError(f"no macro-architecture for space {space!r}; known: {list(_SPACES)}")
    out = []
    for s in strides:
        out.append(hw)
        hw = _strided(hw, s)
    return out


def _block_macro(space: str) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    if space == "resnet":
        return RESNET_STEM_WIDTH, RESNET_WIDTHS, RESNET_STRIDES
    if space == "mobilenetv3":
        return MOBILENETV3_STEM_WIDTH, MOBILENETV3_WIDTHS, MOBILENETV3_STRIDES
    return OFA_STEM_WIDTH, OFA_WIDTHS, OFA_STRIDES


def _resolve_space(space):
    if isinstance(space, str):
        from .spaces import get_space  # lazy: spaces sits below models in the import order

        return get_space(space)
    if not hasattr(space, "name") or not hasattr(space, "depth_bounds"):
        raise ValueError(f"expected a SearchSpace or a space name, got {type(space).__name__}")
    return space


def _channel_grid(low: int, high: int, step: int) -> list[int]:
    """Multiples of ``step`` from the one at or below ``low`` to the one at or above ``high``
    (starting at ``low`` itself when ``low < step``)."""
    start = low // step * step
    stop = -(-high // step) * step
    return ([low] if start == 0 else []) + list(range(start or step, stop + 1, step))


def block_specs(
    space, resolution: int | None = None, densenet_channel_step: int = 32
) -> list[BlockSpec]:
    """Every distinct block of a built-in space, for lookup-table profiling.

    Parameters
    ----------
    space : SearchSpace or str
        ``resnet``, ``mobilenetv3``, ``ofa_mobilenetv3`` or ``densenet`` (its
        choices and depth bounds are read from the space).
    resolution : int, optional
        Input resolution of the whole model (default: the space's
        ``default_resolution``, 224).
    densenet_channel_step : int
        Spacing of the DenseNet input-channel grid.

    Returns
    -------
    list of BlockSpec
        ResNet / MobileNetV3 / OFA: one spec per (unit, position, kernel_size,
        expand_ratio), position ``"first"`` (the unit's first block, which may
        change width and stride) or ``"rest"`` (``in == out``, stride 1), in
        the row order of ``shared/datasets/h200/*_b1_lut.csv``. DenseNet: a
        dense layer's cost depends on its input channels, which depend on the
        depths of earlier units, so for each unit and kernel size there is one
        ``"dense_layer"`` spec per input-channel count on a grid of multiples
        of ``densenet_channel_step`` covering every reachable count (unit 0:
        64, 96, ..., 64 + 19*32), followed by ``"transition"`` specs on the
        same kind of grid over the unit's reachable output channels.

    Examples
    --------
    >>> specs = block_specs("resnet")
    >>> len(specs), specs[0].in_channels, specs[0].in_hw, specs[0].stride
    (72, 64, 56, 1)
    >>> tuple(specs[0].build()(torch.zeros(specs[0].input_shape(1))).shape)
    (1, 256, 56, 56)
    """
    space = _resolve_space(space)
    name = space.name
    if name not in _SPACES:
        raise ValueError(
            f"block_specs: no macro-architecture for space {name!r}; known: {list(_SPACES)}"
        )
    if resolution is None:
        resolution = int(getattr(space, "default_resolution", 224))
    hws = _unit_input_hw(name, resolution)
    if len(space.depth_bounds) != len(hws):
        raise ValueError(
            f"block_specs: space {name!r} has {len(space.depth_bounds)} units, "
            f"its macro-architecture {len(hws)}"
        )
    specs: list[BlockSpec] = []
    if name == "densenet":
        step = densenet_channel_step
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"densenet_channel_step must be a positive int, got {step!r}")
        kernels = [int(k) for k in space.unit_choices["kernel_size"]]
        low = high = DENSENET_STEM_WIDTH
        for unit, (hw, (dmin, dmax)) in enumerate(zip(hws, space.depth_bounds, strict=True)):
            if dmax >= 1:
                for c in _channel_grid(low, high + DENSENET_GROWTH * (dmax - 1), step):
                    specs += [
                        BlockSpec(name, unit, "dense_layer", k, None, c, c + DENSENET_GROWTH, hw, 1)
                        for k in kernels
                    ]
            low, high = low + DENSENET_GROWTH * dmin, high + DENSENET_GROWTH * dmax
            if unit < len(hws) - 1:
                specs += [
                    BlockSpec(name, unit, "transition", None, None, c, c // 2, hw, 2)
                    for c in _channel_grid(low, high, step)
                ]
                low, high = low // 2, high // 2
        return specs
    stem, widths, strides = _block_macro(name)
    combos = [(int(k), float(e)) for k, e in space.block_combinations]
    in_channels = stem
    for unit, (hw, width, stride, (_, dmax)) in enumerate(
        zip(hws, widths, strides, space.depth_bounds, strict=True)
    ):
        specs += [
            BlockSpec(name, unit, "first", k, e, in_channels, width, hw, stride) for k, e in combos
        ]
        if dmax >= 2:
            rest_hw = _strided(hw, stride)
            specs += [
                BlockSpec(name, unit, "rest", k, e, width, width, rest_hw, 1) for k, e in combos
            ]
        in_channels = width
    return specs


# ------------------------------------------------------------ arch checking
def _load_arch(arch, where: str) -> Mapping:
    if isinstance(arch, (str, bytes)):
        try:
            arch = json.loads(arch)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: architecture is not valid JSON: {exc}") from None
    if not isinstance(arch, Mapping):
        raise ValueError(f"{where}: an architecture must be a dict, got {type(arch).__name__}")
    return arch


def _as_arch(arch, space: str) -> Mapping:
    arch = _load_arch(arch, space)
    given = arch.get("space", space)
    if given != space:
        raise ValueError(f"architecture of space {given!r} given to the {space} builder")
    return arch


def _check_kernel(k: Any, where: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or k != int(k) or k < 1 or k % 2 == 0:
        raise ValueError(f"{where}: kernel_size must be a positive odd int, got {k!r}")
    return int(k)


def _check_depth(arch: Mapping, space: str, n_units: int) -> list[int]:
    depth = arch.get("depth")
    if not isinstance(depth, Sequence) or isinstance(depth, str) or len(depth) != n_units:
        raise ValueError(f"{space}: field 'depth' must list {n_units} ints, got {depth!r}")
    for unit, d in enumerate(depth):
        if isinstance(d, bool) or not isinstance(d, (int, float)) or d != int(d) or d < 1:
            raise ValueError(f"{space}: unit {unit}: depth must be a positive int, got {d!r}")
    return [int(d) for d in depth]


def _block_choices(arch: Mapping, space: str, n_units: int) -> list[list[tuple[int, float]]]:
    """Per unit, the (kernel_size, expand_ratio) of every block, checked for shape."""
    depth = _check_depth(arch, space, n_units)
    out = []
    for fname in ("kernel_size", "expand_ratio"):
        per_unit = arch.get(fname)
        if (
            not isinstance(per_unit, Sequence)
            or isinstance(per_unit, str)
            or len(per_unit) != n_units
        ):
            raise ValueError(
                f"{space}: field {fname!r} must hold {n_units} lists, got {per_unit!r}"
            )
        for unit, (values, d) in enumerate(zip(per_unit, depth, strict=True)):
            if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != d:
                raise ValueError(
                    f"{space}: unit {unit}: field {fname!r} must list {d} values (the unit's "
                    f"depth), got {values!r}"
                )
    for unit in range(n_units):
        blocks = []
        for b, (k, e) in enumerate(
            zip(arch["kernel_size"][unit], arch["expand_ratio"][unit], strict=True)
        ):
            where = f"{space}: unit {unit}, block {b}"
            k = _check_kernel(k, where)
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not e > 0:
                raise ValueError(f"{where}: expand_ratio must be a positive number, got {e!r}")
            blocks.append((k, float(e)))
        out.append(blocks)
    return out


def _arch_resolution(arch: Mapping, resolution) -> int:
    if resolution is None:
        resolution = arch.get("resolution", 224)
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, (int, float))
        or resolution != int(resolution)
    ):
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    return int(resolution)


def arch_block_specs(arch, resolution: int | None = None) -> list[BlockSpec]:
    """The spec of every block of ``arch`` (and DenseNet transition), in execution order.

    Summing a lookup table over these specs gives the LUT latency estimate.

    Parameters
    ----------
    arch : dict or str
        Architecture with a ``"space"`` field naming a built-in space.
    resolution : int, optional
        Input resolution (default: the arch's ``resolution``, else 224).

    Returns
    -------
    list of BlockSpec

    Examples
    --------
    >>> arch = {"space": "densenet", "depth": [2, 1, 1, 1, 1], "kernel_size": [3, 5, 1, 7, 9]}
    >>> [(s.position, s.in_channels, s.out_channels) for s in arch_block_specs(arch)][:3]
    [('dense_layer', 64, 96), ('dense_layer', 96, 128), ('transition', 128, 64)]
    """
    arch = _load_arch(arch, "arch_block_specs")
    if arch.get("space") not in _SPACES:
        raise ValueError(
            f"arch_block_specs: the arch's 'space' must be one of {list(_SPACES)}, "
            f"got {arch.get('space')!r}"
        )
    name = arch["space"]
    resolution = _arch_resolution(arch, resolution)
    hws = _unit_input_hw(name, resolution)
    specs: list[BlockSpec] = []
    if name == "densenet":
        depth = _check_depth(arch, name, DENSENET_UNITS)
        kernels = arch.get("kernel_size")
        if (
            not isinstance(kernels, Sequence)
            or isinstance(kernels, str)
            or len(kernels) != DENSENET_UNITS
        ):
            raise ValueError(
                f"densenet: field 'kernel_size' must list {DENSENET_UNITS} values "
                f"(one per unit), got {kernels!r}"
            )
        c = DENSENET_STEM_WIDTH
        for unit, (d, k, hw) in enumerate(zip(depth, kernels, hws, strict=True)):
            k = _check_kernel(k, f"densenet: unit {unit}")
            for _ in range(d):
                specs.append(
                    BlockSpec(name, unit, "dense_layer", k, None, c, c + DENSENET_GROWTH, hw, 1)
                )
                c += DENSENET_GROWTH
            if unit < DENSENET_UNITS - 1:
                specs.append(BlockSpec(name, unit, "transition", None, None, c, c // 2, hw, 2))
                c //= 2
        return specs
    stem, widths, strides = _block_macro(name)
    choices = _block_choices(arch, name, len(widths))
    in_channels = stem
    for unit, (blocks, hw, width, stride) in enumerate(
        zip(choices, hws, widths, strides, strict=True)
    ):
        for b, (k, e) in enumerate(blocks):
            if b == 0:
                specs.append(BlockSpec(name, unit, "first", k, e, in_channels, width, hw, stride))
                hw = _strided(hw, stride)
            else:
                specs.append(BlockSpec(name, unit, "rest", k, e, width, width, hw, 1))
        in_channels = width
    return specs


# ------------------------------------------------------------------ builders
def _assemble(specs: list[BlockSpec], n_units: int, stem, head, arch, transitions: bool = False):
    units: list[list[nn.Module]] = [[] for _ in range(n_units)]
    trans: list[nn.Module] = []
    for spec in specs:
        (trans if spec.position == "transition" else units[spec.unit]).append(spec.build())
    return StagedNet(
        stem,
        [nn.Sequential(*u) for u in units],
        head,
        transitions=trans if transitions else None,
        specs=specs,
        arch=dict(arch),
    )


def _checked_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def build_resnet(arch, resolution: int = 224, num_classes: int = 1000) -> StagedNet:
    """Build a ResNet-space architecture (the H200 data's macro-architecture).

    Stem conv3x3/2 (3->32), conv3x3 (32->32), conv3x3 (32->64), max-pool
    3x3/2; 4 units of :class:`Bottleneck` blocks with output widths 256, 512,
    1024, 2048 (the first block of units 2-4 has stride 2); global average
    pool and a linear head.

    Parameters
    ----------
    arch : dict or str
        Canonical architecture (``get_space("resnet").validate(arch)``);
        ``SearchSpace.build_model`` validates before calling this.
    resolution : int
        Input resolution (only checked; the model accepts any size).
    num_classes : int
        Outputs of the linear head.

    Returns
    -------
    StagedNet

    Examples
    --------
    >>> arch = {"space": "resnet", "depth": [1, 1, 1, 1], "kernel_size": [[3], [3], [3], [3]],
    ...         "expand_ratio": [[0.5], [0.5], [0.5], [0.5]]}
    >>> build_resnet(arch, num_classes=10).eval()(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 10])
    """
    arch = _as_arch(arch, "resnet")
    num_classes = _checked_num_classes(num_classes)
    specs = arch_block_specs({**arch, "space": "resnet"}, resolution=resolution)
    stem = nn.Sequential(
        _conv_bn(3, 32, 3, 2, act="relu"),
        _conv_bn(32, 32, 3, act="relu"),
        _conv_bn(32, RESNET_STEM_WIDTH, 3, act="relu"),
        nn.MaxPool2d(3, 2, 1),
    )
    head = nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(RESNET_WIDTHS[-1], num_classes)
    )
    return _assemble(specs, len(RESNET_WIDTHS), stem, head, arch)


def build_mobilenetv3(arch, resolution: int = 224, num_classes: int = 1000) -> StagedNet:
    """Build a MobileNetV3-space architecture (the H200 data's macro-architecture).

    Stem conv3x3/2 (3->16, hardswish) and one fixed :class:`InvertedResidual`
    (16->16, k3, hidden 16); 4 units with output widths 16, 32, 64, 128 whose
    first block has stride 2; hidden width ``round8(in * 6 * expand_ratio)``,
    squeeze-excite in units 1-3; head conv1x1 to 576, pool, linear 1024,
    hardswish, linear ``num_classes``.

    Parameters
    ----------
    arch : dict or str
        Canonical architecture (``get_space("mobilenetv3").validate(arch)``).
    resolution : int
        Input resolution (only checked; the model accepts any size).
    num_classes : int
        Outputs of the last linear layer.

    Returns
    -------
    StagedNet
    """
    arch = _as_arch(arch, "mobilenetv3")
    num_classes = _checked_num_classes(num_classes)
    specs = arch_block_specs({**arch, "space": "mobilenetv3"}, resolution=resolution)
    stem = nn.Sequential(
        _conv_bn(3, MOBILENETV3_STEM_WIDTH, 3, 2, act="hswish"),
        InvertedResidual(
            MOBILENETV3_STEM_WIDTH,
            MOBILENETV3_STEM_WIDTH,
            3,
            MOBILENETV3_STEM_WIDTH,
            1,
            act="hswish",
        ),
    )
    conv_width, fc_width = MOBILENETV3_HEAD
    head = nn.Sequential(
        _conv_bn(MOBILENETV3_WIDTHS[-1], conv_width, 1, act="hswish"),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(conv_width, fc_width),
        nn.Hardswish(inplace=True),
        nn.Linear(fc_width, num_classes),
    )
    return _assemble(specs, len(MOBILENETV3_WIDTHS), stem, head, arch)


def build_densenet(arch, resolution: int = 224, num_classes: int = 1000) -> StagedNet:
    """Build a DenseNet-space architecture (the H200 data's macro-architecture).

    Stem conv7x7/2 (3->64, BN, ReLU) + max-pool 3x3/2; 5 units of
    :class:`DenseLayer` (growth 32, one kernel size per unit) with a
    :class:`Transition` (halving channels, avg-pool 2x2) between units; head
    BN, ReLU, global pool, linear. The transitions' pooling floors (7 -> 3 at
    224, as in the H200 data), so the resolution must be at least 61.

    Parameters
    ----------
    arch : dict or str
        Canonical architecture (``get_space("densenet").validate(arch)``).
    resolution : int
        Input resolution (checked against the minimum of 61).
    num_classes : int
        Outputs of the linear head.

    Returns
    -------
    StagedNet
    """
    arch = _as_arch(arch, "densenet")
    num_classes = _checked_num_classes(num_classes)
    specs = arch_block_specs({**arch, "space": "densenet"}, resolution=resolution)
    stem = nn.Sequential(
        nn.Conv2d(3, DENSENET_STEM_WIDTH, 7, 2, 3, bias=False),
        nn.BatchNorm2d(DENSENET_STEM_WIDTH),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    )
    channels = specs[-1].out_channels
    head = nn.Sequential(
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(channels, num_classes),
    )
    return _assemble(specs, DENSENET_UNITS, stem, head, arch, transitions=True)


def build_ofa_mobilenetv3(
    arch, resolution: int | None = None, num_classes: int = 1000
) -> StagedNet:
    """Build a Once-for-All MobileNetV3 sub-network (the HELP tables' space).

    First conv 3->16 stride 2 (hardswish); fixed block 16->16 (k3, expand 1,
    ReLU, residual); 5 units of widths 24, 40, 80, 112, 160, strides 2, 2, 2,
    1, 2, activations ReLU, ReLU, hardswish x3, squeeze-excite in units 1, 3,
    4; hidden width ``make_divisible(round(in * expand_ratio), 8)``; final
    conv1x1 to 960, pool, conv1x1 feature mix to 1280 (no BN) with hardswish,
    linear classifier.

    Parameters
    ----------
    arch : dict or str
        Canonical architecture (``get_space("ofa_mobilenetv3").validate(arch)``).
    resolution : int, optional
        Input resolution (default: the arch's ``resolution``, else 224; only
        checked, the model accepts any size).
    num_classes : int
        Outputs of the classifier.

    Returns
    -------
    StagedNet
    """
    arch = _as_arch(arch, "ofa_mobilenetv3")
    num_classes = _checked_num_classes(num_classes)
    specs = arch_block_specs({**arch, "space": "ofa_mobilenetv3"}, resolution=resolution)
    stem = nn.Sequential(
        _conv_bn(3, OFA_STEM_WIDTH, 3, 2, act="hswish"),
        InvertedResidual(OFA_STEM_WIDTH, OFA_STEM_WIDTH, 3, OFA_STEM_WIDTH, 1, act="relu"),
    )
    expand_width, mix_width = OFA_HEAD
    head = nn.Sequential(
        _conv_bn(OFA_WIDTHS[-1], expand_width, 1, act="hswish"),
        nn.AdaptiveAvgPool2d(1),
        nn.Conv2d(expand_width, mix_width, 1, bias=False),
        nn.Hardswish(inplace=True),
        nn.Flatten(1),
        nn.Linear(mix_width, num_classes),
    )
    return _assemble(specs, len(OFA_WIDTHS), stem, head, arch)
