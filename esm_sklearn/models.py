"""PyTorch modules built from the torch-free macro-architectures of :mod:`esm_sklearn.macro`.

This module only turns descriptions into ``torch.nn.Module`` objects: every
model is a :class:`StagedNet` whose stem and head are built from the space's
:class:`~esm_sklearn.macro.Macro` and whose blocks are built from
:class:`~esm_sklearn.macro.BlockSpec` objects by :func:`build_block`, the
same specs :meth:`SearchSpace.block_specs` lists for lookup-table profiling,
so a profiled block is exactly the module used inside the full model.
Architectures are validated by :meth:`SearchSpace.validate` (through
:meth:`SearchSpace.build_model`), never here. Models are built on the CPU in
training mode, like any ``torch.nn.Module``; call ``.eval()`` before timing.

The built-in spaces name :func:`build_from_macro` as their builder
(``"esm_sklearn.models:build_from_macro"``); ``build_resnet`` and the other
``build_<space>`` functions, ``block_specs`` and ``arch_block_specs`` are the
same thing spelled per space / as functions.
"""

from __future__ import annotations

import torch
from torch import nn

from .macro import MACROS, BlockSpec, get_macro, make_divisible
from .spaces import SearchSpace, get_space, load_arch

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
    "build_block",
    "build_densenet",
    "build_from_macro",
    "build_mobilenetv3",
    "build_ofa_mobilenetv3",
    "build_resnet",
    "make_divisible",
]

_DENSE = MACROS["densenet"]


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
    ``hidden_channels == in_channels`` unless ``always_expand``. Residual when
    ``stride == 1`` and ``in_channels == out_channels``. With ``groups > 1``
    (FBNet) the 1x1 convs are group convs and a channel shuffle follows the
    expansion.
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
        groups: int = 1,
        always_expand: bool = False,
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.hidden_channels = hidden_channels
        self.expand = (
            _conv_bn(in_channels, hidden_channels, 1, groups=groups, act=act)
            if always_expand or hidden_channels != in_channels
            else None
        )
        self.shuffle = nn.ChannelShuffle(groups) if groups > 1 else None
        self.depthwise = _conv_bn(
            hidden_channels, hidden_channels, kernel_size, stride, groups=hidden_channels, act=act
        )
        self.se = SqueezeExcite(hidden_channels) if use_se else None
        self.project = _conv_bn(hidden_channels, out_channels, 1, groups=groups)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        if self.shuffle is not None:
            y = self.shuffle(y)
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
        growth: int = _DENSE.growth,
        bottleneck: int = _DENSE.bottleneck,
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


# ------------------------------------------------------------------ builders
def build_block(spec: BlockSpec) -> nn.Module:
    """The block of ``spec`` as a ``torch.nn.Module`` (what ``spec.build()`` calls).

    Examples
    --------
    >>> spec = get_space("resnet").block_specs()[0]
    >>> tuple(build_block(spec)(torch.zeros(spec.input_shape(1))).shape)
    (1, 256, 56, 56)
    """
    macro = get_macro(spec.space)
    k, e = spec.kernel_size, spec.expand_ratio
    if spec.position == "projection":
        return _conv_bn(spec.in_channels, spec.out_channels, 1, spec.stride, act="relu")
    if macro.block == "bottleneck":
        return Bottleneck(spec.in_channels, spec.out_channels, k, e, spec.stride)
    if macro.block in ("inverted_residual", "fbnet"):
        return InvertedResidual(
            spec.in_channels,
            spec.out_channels,
            k,
            macro.hidden_channels(spec.in_channels, e),
            spec.stride,
            act=macro.activations[spec.unit],
            use_se=macro.se[spec.unit],
            groups=spec.groups,
            always_expand=macro.block == "fbnet",
        )
    if spec.position == "transition":
        return Transition(spec.in_channels)
    return DenseLayer(spec.in_channels, k, macro.growth, macro.bottleneck)


def _build_layer(layer: tuple) -> nn.Module:
    kind, *args = layer
    if kind == "conv_bn":
        cin, cout, k, stride, act = args
        return _conv_bn(cin, cout, k, stride, act=act)
    if kind == "conv":
        cin, cout, k, stride, bias = args
        return nn.Conv2d(cin, cout, k, stride, k // 2, bias=bias)
    if kind == "bn":
        return nn.BatchNorm2d(args[0])
    if kind == "act":
        return _activation(args[0])
    if kind == "maxpool":
        k, stride = args
        return nn.MaxPool2d(k, stride, k // 2)
    if kind == "pool":
        return nn.AdaptiveAvgPool2d(1)
    if kind == "flatten":
        return nn.Flatten(1)
    if kind == "linear":
        return nn.Linear(*args)
    if kind == "inverted_residual":
        cin, cout, k, hidden, stride, act = args
        return InvertedResidual(cin, cout, k, hidden, stride, act=act)
    raise ValueError(f"unknown macro layer {layer!r}")


def build_from_macro(
    space: SearchSpace, arch, resolution: int, num_classes: int = 1000
) -> StagedNet:
    """Build a *canonical* ``arch`` of ``space`` from the space's macro-architecture.

    The builder the built-in spaces name; :meth:`SearchSpace.build_model`
    validates ``arch`` and resolves ``resolution`` before calling it.

    Parameters
    ----------
    space : SearchSpace
        A space with a macro-architecture.
    arch : dict
        Canonical architecture of ``space``.
    resolution : int
        Input resolution (the model accepts any size; this sets the specs'
        feature-map sizes and is checked against the macro's minimum).
    num_classes : int
        Outputs of the head.

    Returns
    -------
    StagedNet
    """
    macro = space.macro if space.macro is not None else get_macro(space.name)
    specs = macro.arch_specs(arch, resolution)
    channels = specs[-1].out_channels if macro.block == "dense" else macro.widths[-1]
    units: list[list[nn.Module]] = [[] for _ in range(macro.n_units)]
    # After unit i: a DenseNet transition, or the projection standing for an
    # empty unit (identity after the others).
    after: list[nn.Module] = [nn.Identity() for _ in range(macro.n_units)]
    for spec in specs:
        if spec.position in ("transition", "projection"):
            after[spec.unit] = build_block(spec)
        else:
            units[spec.unit].append(build_block(spec))
    if macro.block == "dense":
        transitions = after[:-1]
    else:
        transitions = after if any(s.position == "projection" for s in specs) else None
    return StagedNet(
        nn.Sequential(*map(_build_layer, macro.stem)),
        [nn.Sequential(*u) for u in units],
        nn.Sequential(*map(_build_layer, macro.head_layers(channels, num_classes))),
        transitions=transitions,
        specs=specs,
        arch=dict(arch),
    )


def _builder_of(name: str):
    def build(arch, resolution: int | None = None, num_classes: int = 1000) -> StagedNet:
        return get_space(name).build_model(arch, resolution=resolution, num_classes=num_classes)

    build.__name__ = build.__qualname__ = f"build_{name}"
    build.__doc__ = f"""Build a validated ``{name}`` architecture: ``get_space("{name}").build_model(...)``.

    Parameters
    ----------
    arch : dict or str
        Architecture of the space (validated by :meth:`SearchSpace.validate`).
    resolution : int, optional
        Input resolution (see :meth:`SearchSpace.input_resolution`).
    num_classes : int
        Outputs of the head.

    Returns
    -------
    StagedNet
    """
    return build


build_resnet = _builder_of("resnet")
build_mobilenetv3 = _builder_of("mobilenetv3")
build_densenet = _builder_of("densenet")
build_ofa_mobilenetv3 = _builder_of("ofa_mobilenetv3")


def block_specs(space, resolution: int | None = None, densenet_channel_step: int = 32) -> list[BlockSpec]:
    """``get_space(space).block_specs(...)``: see :meth:`SearchSpace.block_specs`.

    Examples
    --------
    >>> specs = block_specs("resnet")
    >>> tuple(specs[0].build()(torch.zeros(specs[0].input_shape(1))).shape)
    (1, 256, 56, 56)
    """
    return get_space(space).block_specs(resolution, densenet_channel_step)


def arch_block_specs(arch, resolution: int | None = None) -> list[BlockSpec]:
    """The specs of ``arch``'s blocks: :meth:`SearchSpace.arch_block_specs` of its space.

    Examples
    --------
    >>> arch = {"space": "densenet", "depth": [2, 1, 1, 1, 1], "kernel_size": [3, 5, 1, 7, 9]}
    >>> [(s.position, s.in_channels, s.out_channels) for s in arch_block_specs(arch)][:3]
    [('dense_layer', 64, 96), ('dense_layer', 96, 128), ('transition', 128, 64)]
    """
    name = load_arch(arch, "arch_block_specs").get("space")
    get_macro(name)
    return get_space(name).arch_block_specs(arch, resolution)
