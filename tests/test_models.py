"""Model builders and block specs: shapes, macro-architecture rules, H200 LUT conventions."""

import json
import math
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from esm_sklearn import SearchSpace, get_space
from esm_sklearn.models import (
    BlockSpec,
    StagedNet,
    Transition,
    arch_block_specs,
    block_specs,
    build_densenet,
    build_mobilenetv3,
    build_ofa_mobilenetv3,
    build_resnet,
    make_divisible,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
H200 = SHARED / "datasets" / "h200"
BUILT_SPACES = ["resnet", "mobilenetv3", "densenet", "ofa_mobilenetv3"]
LUT_COLUMNS = [
    "unit",
    "position",
    "kernel_size",
    "expand_ratio",
    "in_channels",
    "out_channels",
    "in_hw",
    "stride",
]
RES = 64  # smallest convenient resolution that every space supports (DenseNet needs >= 61)


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def _uniform_arch(space, depth, **choices):
    """Arch of ``space`` with the given depths and one value per choice everywhere."""
    arch = {"space": space, "depth": list(depth)}
    for name, value in choices.items():
        if space == "densenet":
            arch[name] = [value] * len(depth)
        else:
            arch[name] = [[value] * d for d in depth]
    return arch


def _run_with_block_shapes(model, x):
    """Forward ``x``; return the output and (module, input shape, output shape) of every block."""
    seen = []
    blocks = [b for unit in model.units for b in unit]
    if model.transitions is not None:
        blocks += list(model.transitions)
    hooks = [
        b.register_forward_hook(
            lambda m, inp, out: seen.append((m, tuple(inp[0].shape), tuple(out.shape)))
        )
        for b in blocks
    ]
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        for h in hooks:
            h.remove()
    return y, seen


def _lut_key(values):
    out = []
    for col, v in zip(LUT_COLUMNS, values, strict=True):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif col in ("kernel_size", "expand_ratio"):
            out.append(round(float(v), 4))
        else:
            out.append(v)
    return tuple(out)


def _spec_keys(specs):
    return [_lut_key([getattr(s, c) for c in LUT_COLUMNS]) for s in specs]


def _csv_keys(path):
    frame = pd.read_csv(path)
    return [_lut_key(row) for row in frame[LUT_COLUMNS].itertuples(index=False)]


# ------------------------------------------------------------------ helpers
def test_make_divisible_rounds_to_nearest_multiple_not_below_90_percent():
    for tenth in range(40, 4000, 7):
        v = tenth / 10
        r = make_divisible(v, 8)
        assert r % 8 == 0 and r >= 8
        assert r >= 0.9 * v
        if v >= 8:
            assert abs(r - v) <= 8
    assert make_divisible(256 / 4 * 0.6667, 8) == 40  # nearest multiple is 40 (>= 38.4)
    assert make_divisible(19, 8) == 24  # 16 would be < 90% of 19


# ------------------------------------------------------ every space builds
@pytest.mark.parametrize("name", BUILT_SPACES)
def test_sampled_archs_forward_and_blocks_match_their_specs(name):
    space = get_space(name)
    # balanced sampling starts with the shallowest bins: cheap models
    for arch in space.sample(2, "balanced", random_state=1):
        model = space.build_model(json.dumps(arch), resolution=RES, num_classes=7).eval()
        assert isinstance(model, StagedNet)
        assert [len(u) for u in model.units] == arch["depth"]
        y, seen = _run_with_block_shapes(model, torch.randn(1, 3, RES, RES))
        assert y.shape == (1, 7) and torch.isfinite(y).all()
        specs = arch_block_specs(arch, resolution=RES)
        assert len(specs) == len(seen) == sum(arch["depth"]) + (4 if name == "densenet" else 0)
        by_module = {id(m): (inp, out) for m, inp, out in seen}
        blocks = [b for unit in model.units for b in unit]
        transitions = list(model.transitions or [])
        for spec in specs:
            module = transitions.pop(0) if spec.position == "transition" else blocks.pop(0)
            inp, out = by_module[id(module)]
            assert inp == spec.input_shape(1), spec
            assert out == (1, spec.out_channels, spec.out_hw, spec.out_hw), spec
            # the profiled block is exactly the block inside the model
            assert repr(spec.build()) == repr(module)


@pytest.mark.parametrize("name", BUILT_SPACES)
def test_deeper_arch_has_more_parameters(name):
    space = get_space(name)
    choices = {"kernel_size": 3} if name == "densenet" else {"kernel_size": 3, "expand_ratio": 0.5}
    if name == "ofa_mobilenetv3":
        choices = {"kernel_size": 3, "expand_ratio": 3}
    low = [lo for lo, _ in space.depth_bounds]
    shallow, deep = (
        _uniform_arch(name, low, **choices),
        _uniform_arch(name, [d + 1 for d in low], **choices),
    )
    if name == "ofa_mobilenetv3":
        shallow["resolution"] = deep["resolution"] = 224
    n_shallow = _n_params(space.build_model(shallow, num_classes=10))
    n_deep = _n_params(space.build_model(deep, num_classes=10))
    assert n_deep > n_shallow


def test_num_classes_and_ofa_resolution_from_arch():
    space = get_space("ofa_mobilenetv3")
    arch = space.sample(1, random_state=3)[0]
    model = space.build_model(arch, num_classes=3).eval()
    assert model.head[-1].out_features == 3
    specs = arch_block_specs(arch)  # resolution read from the arch
    assert specs[0].in_hw == (arch["resolution"] - 1) // 2 + 1
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 40, 40)).shape == (1, 3)


# ------------------------------------------------------------- structure
def test_resnet_structure():
    arch = {
        "space": "resnet",
        "depth": [2, 3, 1, 2],
        "kernel_size": [[3, 5], [7, 3, 5], [5], [3, 7]],
        "expand_ratio": [[0.5, 1.0], [0.6667, 0.5, 1.0], [0.6667], [1.0, 0.5]],
    }
    model = build_resnet(arch, num_classes=5)
    widths = (256, 512, 1024, 2048)
    assert [len(u) for u in model.units] == arch["depth"]
    in_ch = 64
    for unit, blocks in enumerate(model.units):
        for b, block in enumerate(blocks):
            k, e = arch["kernel_size"][unit][b], arch["expand_ratio"][unit][b]
            mid = make_divisible(widths[unit] / 4 * e, 8)
            assert block.conv1[0].in_channels == (in_ch if b == 0 else widths[unit])
            assert block.conv1[0].out_channels == mid
            assert block.conv2[0].kernel_size == (k, k)
            assert block.conv2[0].padding == (k // 2, k // 2)
            assert block.conv3[0].out_channels == widths[unit]
            stride = 2 if (b == 0 and unit > 0) else 1
            assert block.conv2[0].stride == (stride, stride)
            if b == 0:  # shape change: [avgpool] + conv1x1 + BN
                kinds = [type(m).__name__ for m in block.shortcut]
                assert kinds == (["AvgPool2d"] if unit > 0 else []) + ["Conv2d", "BatchNorm2d"]
            else:
                assert block.shortcut is None
        in_ch = widths[unit]
    assert model.head[-1].in_features == 2048
    # unit outputs 256..2048 at /4, /8, /16, /32 (odd sizes included: 72 -> 18, 9, 5, 3)
    _, seen = _run_with_block_shapes(model.eval(), torch.zeros(1, 3, 72, 72))
    last = [seen[sum(arch["depth"][: u + 1]) - 1][2] for u in range(4)]
    assert last == [(1, 256, 18, 18), (1, 512, 9, 9), (1, 1024, 5, 5), (1, 2048, 3, 3)]


def test_mobilenetv3_structure_and_residual_rule():
    arch = {
        "space": "mobilenetv3",
        "depth": [2, 1, 2, 2],
        "kernel_size": [[3, 7], [5], [7, 3], [5, 5]],
        "expand_ratio": [[0.5, 0.6667], [1.0], [0.5, 1.0], [0.6667, 0.5]],
    }
    model = build_mobilenetv3(arch, num_classes=4).eval()
    widths, in_ch = (16, 32, 64, 128), 16
    for unit, blocks in enumerate(model.units):
        for b, block in enumerate(blocks):
            cin = in_ch if b == 0 else widths[unit]
            k, e = arch["kernel_size"][unit][b], arch["expand_ratio"][unit][b]
            assert block.expand[0].out_channels == make_divisible(cin * 6 * e, 8)
            dw = block.depthwise[0]
            assert dw.kernel_size == (k, k) and dw.groups == dw.in_channels
            assert dw.stride == ((2, 2) if b == 0 else (1, 1))
            assert (block.se is not None) == (unit >= 1)
            assert block.project[0].out_channels == widths[unit]
        in_ch = widths[unit]
    # Zero the projection's BN: a residual block then returns its input, others zeros.
    for blocks in model.units:
        for b, block in enumerate(blocks):
            with torch.no_grad():
                block.project[1].weight.zero_()
                block.project[1].bias.zero_()
                x = torch.randn(1, block.in_channels, 8, 8)
                y = block(x)
            if b == 0:  # stride 2 and/or width change: no residual
                assert not torch.any(y)
            else:
                assert torch.equal(y, x)
    head_layers = [type(m).__name__ for m in model.head]
    assert head_layers == [
        "Sequential",
        "AdaptiveAvgPool2d",
        "Flatten",
        "Linear",
        "Hardswish",
        "Linear",
    ]
    assert model.head[0][0].out_channels == 576 and model.head[3].out_features == 1024


def test_densenet_channel_counts_after_each_unit():
    arch = {"space": "densenet", "depth": [3, 1, 4, 2, 5], "kernel_size": [1, 3, 5, 7, 9]}
    model = build_densenet(arch, resolution=RES, num_classes=6).eval()
    _, seen = _run_with_block_shapes(model, torch.zeros(1, 3, RES, RES))
    expected, c = [], 64
    for d in arch["depth"]:
        c += 32 * d
        expected.append(c)
        c //= 2
    out_shape = {id(m): out for m, _, out in seen}
    unit_outputs = [out_shape[id(unit[-1])][1] for unit in model.units]
    assert unit_outputs == expected
    assert [t.out_channels for t in model.transitions] == [e // 2 for e in expected[:4]]
    assert all(isinstance(t, Transition) for t in model.transitions)
    assert model.head[-1].in_features == expected[-1]
    for unit, blocks in enumerate(model.units):
        k = arch["kernel_size"][unit]
        assert all(
            layer.conv2.kernel_size == (k, k) and layer.conv1.out_channels == 128
            for layer in blocks
        )
    # at 224 the feature maps follow the H200 data: 56, 28, 14, 7, 3
    hws = sorted({s.in_hw for s in arch_block_specs(arch, resolution=224)}, reverse=True)
    assert hws == [56, 28, 14, 7, 3]


# ------------------------------------------------------------------ errors
def test_bad_arch_raises_value_error():
    space = get_space("resnet")
    good = space.sample(1, random_state=0)[0]
    bad_kernel = json.loads(json.dumps(good))
    bad_kernel["kernel_size"][0][0] = 4
    with pytest.raises(ValueError, match="kernel_size"):
        space.build_model(bad_kernel)
    with pytest.raises(ValueError, match="depth"):
        space.build_model({**good, "depth": [1, 1, 1]})
    with pytest.raises(ValueError, match="densenet"):
        get_space("densenet").build_model({**good, "space": "densenet"})
    # the builders validate through SearchSpace.validate too
    with pytest.raises(ValueError, match="kernel_size' has value 4"):
        build_resnet(bad_kernel)
    with pytest.raises(ValueError, match="block 0"):
        build_resnet({**good, "expand_ratio": [[-1.0] * d for d in good["depth"]]})
    with pytest.raises(ValueError, match="given to space 'mobilenetv3'"):
        build_mobilenetv3(good)
    with pytest.raises(ValueError, match="num_classes"):
        build_resnet(good, num_classes=0)
    dense = {"space": "densenet", "depth": [1] * 5, "kernel_size": [3] * 5}
    with pytest.raises(ValueError, match="too small"):
        build_densenet(dense, resolution=32)
    with pytest.raises(ValueError, match="resolution"):
        build_ofa_mobilenetv3(
            get_space("ofa_mobilenetv3").sample(1, random_state=0)[0], resolution=0
        )
    with pytest.raises(ValueError, match="'space' must be one of"):
        arch_block_specs({**good, "space": "nope"})
    with pytest.raises(ValueError, match="not valid JSON"):
        arch_block_specs("{not json")


def test_builders_and_specs_accept_json_strings():
    arch = get_space("densenet").sample(1, random_state=2)[0]
    assert arch_block_specs(json.dumps(arch)) == arch_block_specs(arch)
    model = build_densenet(json.dumps(arch), resolution=RES, num_classes=2)
    assert model.arch == arch and model.specs == arch_block_specs(arch, resolution=RES)


# -------------------------------------------------------------- block specs
@pytest.mark.parametrize("name", ["resnet", "mobilenetv3"])
@pytest.mark.skipif(not H200.is_dir(), reason="shared/datasets/h200 not available")
def test_block_specs_reproduce_h200_lut_rows(name):
    path = H200 / f"{name}_b1_lut.csv"
    if not path.exists():
        pytest.skip(f"{path} not available")
    assert _spec_keys(block_specs(name, resolution=224)) == _csv_keys(path)


@pytest.mark.skipif(
    not (H200 / "densenet_b1_lut.csv").exists(),
    reason="shared/datasets/h200/densenet_b1_lut.csv not available",
)
def test_densenet_specs_follow_h200_lut_convention():
    ref = _csv_keys(H200 / "densenet_b1_lut.csv")
    specs = block_specs("densenet", resolution=224)
    ours = _spec_keys(specs)
    dense = [k for k in ours if k[1] == "dense_layer"]
    # every dense layer we would profile was profiled there, in the same terms
    assert set(dense) <= set(ref) and len(dense) == len(set(dense))
    # unit 0: inputs 64 .. 64 + 19*32; unit 4 reaches the widest range, 32..1216
    for unit in (0, 4):
        assert sorted(k for k in dense if k[0] == unit) == sorted(
            k for k in ref if k[0] == unit and k[1] == "dense_layer"
        )
    ref_trans = {k for k in ref if k[1] == "transition"}
    trans = [k for k in ours if k[1] == "transition"]
    common = [k for k in trans if (k[0], k[4]) in {(r[0], r[4]) for r in ref_trans}]
    assert len(common) >= len(trans) - 3 and set(common) <= ref_trans
    # every reachable dense-layer input width lies inside its unit's grid
    rng = get_space("densenet").sample(50, random_state=0)
    for arch in rng:
        for s in arch_block_specs(arch, resolution=224):
            grid = [
                g[4]
                for g in ours
                if g[0] == s.unit and g[1] == s.position and (g[2] is None or g[2] == s.kernel_size)
            ]
            assert min(grid) <= s.in_channels <= max(grid)


@pytest.mark.parametrize("name", BUILT_SPACES)
def test_block_specs_build_and_run_on_their_input_shape(name):
    specs = block_specs(get_space(name), resolution=RES)
    assert len(set(specs)) == len(specs)  # distinct and hashable
    if name == "densenet":
        # the two narrowest dense layers (kernel 3) and transitions of every unit
        chosen = [
            s
            for s in specs
            if s.kernel_size in (3, None)
            and s.in_channels <= sorted({t.in_channels for t in specs if t.unit == s.unit})[1]
        ]
    else:
        chosen = [
            s
            for s in specs
            if s.kernel_size == 3
            and s.expand_ratio == min(e for e in get_space(name).block_choices["expand_ratio"])
        ]
        assert {(s.unit, s.position) for s in chosen} == {
            (u, p) for u in range(len(get_space(name).depth_bounds)) for p in ("first", "rest")
        }
    for spec in chosen:
        with torch.no_grad():
            out = spec.build().eval()(torch.zeros(spec.input_shape(2)))
        assert tuple(out.shape) == (2, spec.out_channels, spec.out_hw, spec.out_hw)


def test_block_specs_counts_and_options():
    assert len(block_specs("resnet")) == 4 * 2 * 9
    ofa = block_specs("ofa_mobilenetv3", resolution=160)
    assert len(ofa) == 5 * 2 * 9
    firsts = [s for s in ofa if s.position == "first"]
    assert [s.in_hw for s in firsts[::9]] == [80, 40, 20, 10, 10]
    assert [s.stride for s in firsts[::9]] == [2, 2, 2, 1, 2]
    coarse = block_specs("densenet", densenet_channel_step=64)
    fine = block_specs("densenet")
    assert 0 < len(coarse) < len(fine)
    for unit in range(5):
        for position in ("dense_layer", "transition"):
            grid = sorted(
                {s.in_channels for s in coarse if (s.unit, s.position) == (unit, position)}
            )
            assert unit == 4 or grid, (unit, position)
            assert all(c % 64 == 0 for c in grid[1:])
            assert all(b - a <= 64 for a, b in zip(grid, grid[1:]))
    with pytest.raises(ValueError, match="densenet_channel_step"):
        block_specs("densenet", densenet_channel_step=0)
    with pytest.raises(ValueError, match="unknown search space"):
        block_specs("nope")
    with pytest.raises(ValueError, match="no macro-architecture"):
        block_specs(SearchSpace("mine", 1, (1, 2), block_choices={"kernel_size": (3,)}))
    spec = block_specs("mobilenetv3")[0]
    assert isinstance(spec, BlockSpec) and spec.input_shape(4) == (4, 16, 112, 112)
    with pytest.raises(ValueError, match="batch_size"):
        spec.input_shape(0)
    with pytest.raises(FrozenInstanceError):
        spec.stride = 1


# ------------------------------------------------------------------ fbnet
def test_fbnet_builds_with_empty_stages_as_projections():
    space = get_space("fbnet")
    arch = {
        "space": "fbnet",
        "depth": [0, 2, 0, 1, 0, 1, 0],
        "kernel_size": [[], [3, 5], [], [5], [], [3], []],
        "expand_ratio": [[], [1, 6], [], [3], [], [1], []],
        "groups": [[], [2, 1], [], [1], [], [2], []],
    }
    model = space.build_model(arch, resolution=RES, num_classes=5).eval()
    assert [len(u) for u in model.units] == arch["depth"]
    specs = arch_block_specs(arch, resolution=RES)
    # stage 0 (16 -> 16, stride 1) is an identity; other empty stages project
    assert [(s.unit, s.position) for s in specs if s.position == "projection"] == [
        (2, "projection"), (4, "projection"), (6, "projection")
    ]
    assert [type(t).__name__ for t in model.transitions] == [
        "Identity", "Identity", "Sequential", "Identity", "Sequential", "Identity", "Sequential"
    ]
    block = model.units[1][0]
    assert block.expand[0].groups == 2 and block.project[0].groups == 2
    assert block.shuffle is not None and model.units[1][1].shuffle is None
    with torch.no_grad():
        y = model(torch.randn(2, 3, RES, RES))
    assert y.shape == (2, 5) and torch.isfinite(y).all()
    for spec in specs:
        assert tuple(spec.build().eval()(torch.zeros(spec.input_shape(1))).shape) == (
            1, spec.out_channels, spec.out_hw, spec.out_hw
        )


# ------------------------------------------------------------ counts
def _torch_macs(model, resolution):
    """Multiply-accumulates of every Conv2d and Linear, counted by forward hooks."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total += output[0].numel() * module.in_channels // module.groups * kh * kw
        else:
            total += module.in_features * module.out_features

    hooks = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, resolution, resolution))
    finally:
        for h in hooks:
            h.remove()
    return total


@pytest.mark.parametrize("name", [*BUILT_SPACES, "fbnet"])
def test_counts_equal_pytorch_on_sampled_archs(name):
    space = get_space(name)
    archs = space.sample(3, "mixed", random_state=5)
    resolution = None if name == "ofa_mobilenetv3" else RES  # OFA: each arch's own
    params = space.count_params(archs, num_classes=10)
    flops = space.count_flops(archs, resolution=resolution, num_classes=10)
    assert params.dtype == flops.dtype == np.int64 and params.shape == flops.shape == (3,)
    for arch, n_params, n_flops in zip(archs, params, flops, strict=True):
        res = space.input_resolution(arch, resolution)
        model = space.build_model(arch, resolution=res, num_classes=10)
        assert n_params == _n_params(model)
        assert n_flops == _torch_macs(model, res)
    # counts of a batch do not depend on what else is in it
    assert space.count_params(archs[1:], num_classes=10).tolist() == params[1:].tolist()


def test_counts_follow_resolution_and_check_input():
    space = get_space("resnet")
    archs = space.sample(4, random_state=0)
    f64, f128 = space.count_flops(archs, resolution=64), space.count_flops(archs, resolution=128)
    assert np.all(f128 > 3 * f64)
    assert space.count_flops(archs).tolist() == space.count_flops(archs, resolution=224).tolist()
    ofa = get_space("ofa_mobilenetv3")
    arch = ofa.sample(1, random_state=0)[0]
    assert ofa.count_flops([arch]) == ofa.count_flops([arch], resolution=arch["resolution"])
    bad = {**archs[0], "depth": [8, 1, 1, 1]}
    with pytest.raises(ValueError, match="architecture 1: resnet: unit 0: depth 8"):
        space.count_params([archs[0], bad])
    with pytest.raises(ValueError, match="num_classes"):
        space.count_params(archs, num_classes=0)
    with pytest.raises(ValueError, match="resolution must be a positive int"):
        space.count_flops(archs, resolution=-1)
    with pytest.raises(ValueError, match="no macro-architecture"):
        SearchSpace("mine", 1, (1, 2), block_choices={"kernel_size": (3,)}).count_params(
            [{"depth": [1], "kernel_size": [[3]]}]
        )
