"""Parameter and FLOP counts of architectures without building them.

The functions behind :meth:`SearchSpace.count_params` and
:meth:`SearchSpace.count_flops`. Counts come from the torch-free
macro-architecture (:mod:`esm_sklearn.macro`) and are, by construction, those
of the model :meth:`SearchSpace.build_model` builds:

- **parameters**: what PyTorch counts, ``sum(p.numel() for p in
  model.parameters())`` (BatchNorm weight and bias count, its running
  statistics are buffers and do not);
- **FLOPs**: multiply-accumulates (MACs) of the convolution and linear layers
  for one input image, ``out_h * out_w * out_channels * in_channels / groups
  * k * k`` per convolution and ``in * out`` per linear layer, as OFA's
  ``count_net_flops`` and ``thop`` count them; BatchNorm, activations,
  pooling, residual additions and biases are not counted.

Every block's counts are computed once per spec (cached), and a batch of
architectures is read with the encoders' codec, so counting is a few numpy
operations per batch.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .codec import _Codec
from .macro import BlockSpec, Macro, make_divisible, strided

__all__ = ["count"]


def _conv(cin, cout, k, hw, stride=1, groups=1, bias=False) -> tuple[int, int, int]:
    """(params, MACs, output size) of a conv with padding k // 2."""
    out = strided(hw, stride)
    weights = cout * (cin // groups) * k * k
    return weights + (cout if bias else 0), weights * out * out, out


def _total(*parts) -> tuple[int, int]:
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def _bn(c: int) -> tuple[int, int]:
    return 2 * c, 0


def _inverted_residual(cin, cout, k, hidden, hw, stride, se, groups=1, always_expand=False):
    parts = []
    if always_expand or hidden != cin:
        parts += [_conv(cin, hidden, 1, hw, groups=groups), _bn(hidden)]
    depthwise = _conv(hidden, hidden, k, hw, stride, groups=hidden)
    parts += [depthwise, _bn(hidden)]
    if se:
        mid = make_divisible(hidden // 4, 8)
        parts += [_conv(hidden, mid, 1, 1, bias=True), _conv(mid, hidden, 1, 1, bias=True)]
    parts += [_conv(hidden, cout, 1, depthwise[2], groups=groups), _bn(cout)]
    return _total(*parts)


@cache
def spec_counts(spec: BlockSpec, macro: Macro) -> tuple[int, int]:
    """(params, MACs) of the block of ``spec`` (see :func:`esm_sklearn.models.build_block`)."""
    cin, cout, hw, k = spec.in_channels, spec.out_channels, spec.in_hw, spec.kernel_size
    if spec.position == "projection":
        return _total(_conv(cin, cout, 1, hw, spec.stride), _bn(cout))
    if spec.position == "transition":
        return _total(_bn(cin), _conv(cin, cout, 1, hw))
    if spec.position == "dense_layer":
        b = macro.bottleneck
        return _total(_bn(cin), _conv(cin, b, 1, hw), _bn(b), _conv(b, macro.growth, k, hw))
    if macro.block == "bottleneck":
        mid = make_divisible(cout / 4 * spec.expand_ratio, 8)
        conv2 = _conv(mid, mid, k, hw, spec.stride)
        parts = [_conv(cin, mid, 1, hw), _bn(mid), conv2, _bn(mid), _conv(mid, cout, 1, conv2[2]), _bn(cout)]
        if spec.stride != 1 or cin != cout:
            parts += [_conv(cin, cout, 1, conv2[2]), _bn(cout)]
        return _total(*parts)
    hidden = macro.hidden_channels(cin, spec.expand_ratio)
    fbnet = macro.block == "fbnet"
    return _inverted_residual(
        cin, cout, k, hidden, hw, spec.stride, macro.se[spec.unit], groups=spec.groups, always_expand=fbnet
    )


def layers_counts(layers, hw: int) -> tuple[int, int]:
    """(params, MACs) of stem or head layers (see :class:`esm_sklearn.macro.Macro`)."""
    parts = []
    for kind, *args in layers:
        if kind in ("conv_bn", "conv"):
            cin, cout, k, stride, extra = args
            conv = _conv(cin, cout, k, hw, stride, bias=kind == "conv" and extra)
            parts += [conv, _bn(cout)] if kind == "conv_bn" else [conv]
            hw = conv[2]
        elif kind == "bn":
            parts.append(_bn(args[0]))
        elif kind == "maxpool":
            hw = strided(hw, args[1])
        elif kind == "pool":
            hw = 1
        elif kind == "linear":
            parts.append((args[0] * args[1] + args[1], args[0] * args[1]))
        elif kind == "inverted_residual":
            cin, cout, k, hidden, stride, _ = args
            parts.append(_inverted_residual(cin, cout, k, hidden, hw, stride, False))
            hw = strided(hw, stride)
    return _total(*parts)


def _lookup(keys: np.ndarray, count) -> np.ndarray:
    """``(len(keys), 2)`` counts of non-negative integer keys, ``count(key)``
    once per distinct key."""
    present = np.flatnonzero(np.bincount(keys))
    table = np.zeros((int(present[-1]) + 1 if present.size else 1, 2), dtype=np.int64)
    table[present] = np.array([count(int(key)) for key in present], dtype=np.int64).reshape(-1, 2)
    return table[keys]


def _sum_rows(rows: np.ndarray, counts: np.ndarray, n: int) -> np.ndarray:
    """``(n, 2)`` sums of ``counts`` per row index."""
    return np.stack(
        [np.bincount(rows, weights=counts[:, j], minlength=n) for j in range(2)], axis=1
    ).astype(np.int64)


def _block_tables(macro, combos, resolution, num_classes):
    """Per block (unit, first/rest, combination), per empty unit, and fixed
    (stem and head) counts at ``resolution``."""
    geometry = macro.unit_geometry(resolution)
    blocks = [
        [spec_counts(macro.block_spec(u, first, combo, geometry), macro) for combo in combos]
        for u in range(macro.n_units)
        for first in (True, False)
    ]
    projections = [
        (0, 0) if spec is None else spec_counts(spec, macro)
        for spec in (macro.projection_spec(u, geometry) for u in range(macro.n_units))
    ]
    hw, _, _, stride = geometry[-1]
    fixed = np.add(
        layers_counts(macro.stem, resolution),
        layers_counts(macro.head_layers(macro.widths[-1], num_classes), strided(hw, stride)),
    )
    return blocks, projections, fixed


def _block_space_counts(macro, space, scan, resolutions, res_index, num_classes) -> np.ndarray:
    """Counts of a space of searched blocks; architecture i at ``resolutions[res_index[i]]``."""
    tables = [_block_tables(macro, space.block_combinations, int(r), num_classes) for r in resolutions]
    shape = (len(resolutions), macro.n_units, 2, len(space.block_combinations), 2)
    blocks = np.array([t[0] for t in tables], dtype=np.int64).reshape(shape)
    projections = np.array([t[1] for t in tables], dtype=np.int64)  # (n_res, n_units, 2)
    fixed = np.array([t[2] for t in tables], dtype=np.int64)  # (n_res, 2)
    position = (scan.slot > 0).astype(np.intp)  # 0: a unit's first block, 1: later ones
    cost = blocks[res_index[scan.row], scan.unit, position, scan.combo]
    out = _sum_rows(scan.row, cost, scan.n)
    empty = (scan.depth == 0).astype(np.int64)[:, :, None]
    return out + (empty * projections[res_index]).sum(axis=1) + fixed[res_index]


def _dense_space_counts(macro, space, scan, rows, resolution, num_classes) -> np.ndarray:
    """Counts of the architectures ``rows`` of a dense space (one kernel per unit)."""
    name, n_units, growth = macro.name, macro.n_units, macro.growth
    hws = macro.unit_input_hw(resolution)
    kernels = np.array([int(c[0]) for c in scan.codec.unit_combos])[scan.ucode]  # (n, n_units)
    channels = np.empty((scan.n, n_units + 1), dtype=np.int64)  # into each unit, and the head
    channels[:, 0] = macro.stem_width
    for u in range(n_units):
        out = channels[:, u] + growth * scan.depth[:, u]
        channels[:, u + 1] = out if u == n_units - 1 else out // 2
    big = int(channels.max()) + growth * int(scan.depth.max()) + 1
    n_k = int(kernels.max()) + 1
    blocks = rows[scan.row]
    unit, row = scan.unit[blocks], scan.row[blocks]
    cin = channels[row, unit] + growth * scan.slot[blocks]
    keys = (unit * n_k + kernels[row, unit]) * big + cin

    def layer(key):
        (u, k), c = divmod(key // big, n_k), key % big
        return spec_counts(BlockSpec(name, u, "dense_layer", k, None, c, c + growth, hws[u], 1), macro)

    out = _sum_rows(row, _lookup(keys, layer), scan.n)
    sel = np.flatnonzero(rows)
    for u in range(n_units - 1):
        c_out = channels[sel, u] + growth * scan.depth[sel, u]
        out[sel] += _lookup(c_out, lambda c, u=u: spec_counts(
            BlockSpec(name, u, "transition", None, None, c, c // 2, hws[u], 2), macro))
    stem = layers_counts(macro.stem, resolution)
    out[sel] += _lookup(
        channels[sel, -1], lambda c: np.add(stem, layers_counts(macro.head_layers(c, num_classes), 1))
    )
    return out[rows]


def count(space, archs, resolution=None, num_classes: int = 1000) -> np.ndarray:
    """``(n, 2)`` int64 array of (parameters, MACs) of ``archs`` (validated)."""
    macro = space._macro()
    scan = _Codec(space).scan(archs)
    if resolution is not None or "resolution" not in space.global_choices:
        res = np.full(scan.n, space.input_resolution(None, resolution), dtype=np.int64)
    else:
        j = list(space.global_choices).index("resolution")
        res = np.array(space.global_choices["resolution"], dtype=np.int64)[scan.gidx[:, j]]
    resolutions, res_index = np.unique(res, return_inverse=True)
    res_index = res_index.reshape(-1)
    if macro.block != "dense":
        return _block_space_counts(macro, space, scan, resolutions, res_index, num_classes)
    out = np.zeros((scan.n, 2), dtype=np.int64)
    for i, r in enumerate(resolutions):
        rows = res_index == i
        out[rows] = _dense_space_counts(macro, space, scan, rows, int(r), num_classes)
    return out
