import ast
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from esm_sklearn import SearchSpace, get_space, list_spaces
from esm_sklearn.spaces import arch_key, as_arch_list

BUILTIN = ["densenet", "fbnet", "mobilenetv3", "ofa_mobilenetv3", "resnet"]


def test_builtin_spaces_are_registered():
    assert set(BUILTIN) <= set(list_spaces())


def test_unknown_space_names_known_ones():
    with pytest.raises(ValueError, match="unknown search space 'vgg'.*resnet"):
        get_space("vgg")


@pytest.mark.parametrize(
    "name, expected",
    [
        # Table I of the paper: sum_{d=1..7} 9^d per unit, 4 units.
        ("resnet", (9 * (9**7 - 1) // 8) ** 4),
        ("mobilenetv3", (9 * (9**7 - 1) // 8) ** 4),
        # 20 depths x 5 kernels per unit, 5 units.
        ("densenet", 100**5),
        # 3^2 choices per block, 2-4 blocks, 5 units, 25 resolutions.
        ("ofa_mobilenetv3", (9**2 + 9**3 + 9**4) ** 5 * 25),
        # 8 ops; stages of at most 1,4,4,4,4,4,1 layers (0 allowed).
        ("fbnet", (1 + 8) ** 2 * sum(8**d for d in range(5)) ** 5),
    ],
)
def test_size_is_exact(name, expected):
    assert get_space(name).size() == expected


def test_table_one_sizes():
    assert f"{get_space('resnet').size():.3g}" == "8.38e+26"
    assert get_space("densenet").size() == 10**10


def test_mobilenetv3_matches_table_one():
    space = get_space("mobilenetv3")
    assert space.n_units == 4
    assert space.depth_bounds == ((1, 7),) * 4
    assert space.block_choices == {"kernel_size": (3, 5, 7), "expand_ratio": (0.5, 0.6667, 1.0)}


@pytest.mark.parametrize("name", BUILTIN)
def test_samples_validate_and_roundtrip_json(name):
    space = get_space(name)
    for arch in space.sample(20, random_state=1):
        assert space.validate(arch) == arch
        assert space.validate(json.dumps(arch)) == arch


def test_two_thirds_written_loosely_matches_choice():
    space = get_space("resnet")
    arch = {
        "space": "resnet",
        "depth": [1, 1, 1, 1],
        "kernel_size": [[3], [5], [7], [3]],
        "expand_ratio": [[0.667], [2 / 3], [0.6667], [1]],
    }
    canon = space.validate(arch)
    assert canon["expand_ratio"] == [[0.6667], [0.6667], [0.6667], [1.0]]


@pytest.fixture
def arch():
    return {
        "space": "resnet",
        "depth": [2, 1, 1, 1],
        "kernel_size": [[3, 5], [7], [3], [3]],
        "expand_ratio": [[0.5, 1.0], [0.5], [0.5], [0.5]],
    }


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a.update(depth=[8, 1, 1, 1]), r"unit 0: depth 8 outside the allowed range 1\.\.7"),
        (lambda a: a.update(depth=[2, 1, 1]), r"'depth' must list 4 ints"),
        (lambda a: a.update(width=[1]), r"unknown field\(s\) \['width'\]"),
        (lambda a: a.pop("expand_ratio"), r"missing field\(s\) \['expand_ratio'\]"),
        (lambda a: a["kernel_size"].__setitem__(0, [3]), r"unit 0: field 'kernel_size' must list 2 values"),
        (
            lambda a: a["kernel_size"].__setitem__(2, [4]),
            r"unit 2, block 0: field 'kernel_size' has value 4, allowed values are \[3, 5, 7\]",
        ),
        (
            lambda a: a["expand_ratio"][0].__setitem__(1, 0.75),
            r"unit 0, block 1: field 'expand_ratio' has value 0.75",
        ),
        (lambda a: a.update(space="densenet"), r"space 'densenet' given to space 'resnet'"),
    ],
)
def test_validate_names_the_problem(arch, mutate, message):
    mutate(arch)
    with pytest.raises(ValueError, match=message):
        get_space("resnet").validate(arch)


def test_validate_rejects_garbage():
    space = get_space("resnet")
    with pytest.raises(ValueError, match="not valid JSON"):
        space.validate("{not json")
    with pytest.raises(ValueError, match="must be a dict"):
        space.validate(42)


def test_other_space_arch_is_rejected():
    dense = get_space("densenet").sample(1, random_state=0)[0]
    with pytest.raises(ValueError, match="densenet"):
        get_space("resnet").validate(dense)


def test_fbnet_rejects_disallowed_combination():
    space = get_space("fbnet")
    arch = {
        "space": "fbnet",
        "depth": [1, 0, 0, 0, 0, 0, 0],
        "kernel_size": [[3], [], [], [], [], [], []],
        "expand_ratio": [[6], [], [], [], [], [], []],
        "groups": [[2], [], [], [], [], [], []],
    }
    with pytest.raises(ValueError, match="unit 0, block 0: combination .* is not allowed"):
        space.validate(arch)
    arch["groups"] = [[1], [], [], [], [], [], []]
    assert space.validate(arch)["depth"][0] == 1


def test_densenet_unit_choice_is_one_value_per_unit():
    space = get_space("densenet")
    arch = space.sample(1, random_state=3)[0]
    assert len(arch["kernel_size"]) == 5
    assert all(k in (1, 3, 5, 7, 9) for k in arch["kernel_size"])
    arch["kernel_size"][4] = 2
    with pytest.raises(ValueError, match="unit 4: field 'kernel_size' has value 2"):
        space.validate(arch)


def test_balanced_sampling_fills_bins_equally_and_random_does_not():
    space = get_space("resnet")
    balanced = np.bincount(
        space.bin_index(space.sample(5000, "balanced", n_bins=5, random_state=0), 5), minlength=5
    )
    random = np.bincount(space.bin_index(space.sample(5000, random_state=0), 5), minlength=5)
    assert np.all(np.abs(balanced - 1000) <= 30)
    # The central limit piles random depths in the middle: end bins nearly empty.
    assert random[0] < 300 and random[-1] < 300 and random[2] > 1500


def test_balanced_prefix_is_balanced():
    space = get_space("mobilenetv3")
    archs = space.sample(50, "balanced", n_bins=5, random_state=0)
    assert np.bincount(space.bin_index(archs[:10], 5), minlength=5).tolist() == [2] * 5


def test_balanced_covers_every_total_depth():
    space = get_space("resnet")
    totals = space.total_depth(space.sample(2000, "balanced", random_state=0))
    assert set(totals) == set(range(4, 29))


def test_bin_edges_are_equal_width_and_inspectable():
    space = get_space("resnet")
    edges = space.bin_edges(5)
    np.testing.assert_allclose(edges, [4, 8.8, 13.6, 18.4, 23.2, 28])
    shallow = space.sample(1, "balanced", n_bins=25, random_state=0)[0]
    assert space.bin_index([shallow], 5)[0] == 0
    with pytest.raises(ValueError, match="n_bins=30 exceeds the 25 possible total depths"):
        space.bin_edges(30)


def test_bin_index_boundaries():
    space = get_space("resnet")

    def with_depth(depth):
        return {"depth": depth}

    totals_to_bins = {4: 0, 8: 0, 9: 1, 13: 1, 14: 2, 18: 2, 19: 3, 23: 3, 24: 4, 28: 4}
    archs = []
    for total in totals_to_bins:
        base, extra = divmod(total, 4)
        archs.append(with_depth([base + (u < extra) for u in range(4)]))
    assert space.bin_index(archs, 5).tolist() == list(totals_to_bins.values())


def test_seeded_sampling_repeats_and_seeds_differ():
    space = get_space("resnet")
    for strategy in ("random", "balanced"):
        a = space.sample(30, strategy, random_state=7)
        b = space.sample(30, strategy, random_state=7)
        c = space.sample(30, strategy, random_state=8)
        assert a == b
        assert a != c


def test_unique_and_exclude():
    space = get_space("resnet")
    first = space.sample(50, "balanced", random_state=0, unique=True)
    assert len({arch_key(a) for a in first}) == 50
    more = space.sample(50, "balanced", random_state=0, exclude=first)
    assert not {arch_key(a) for a in first} & {arch_key(a) for a in more}


def test_unique_sampling_reports_exhaustion():
    space = SearchSpace("tiny", 1, (1, 1), block_choices={"k": (3, 5)})
    assert space.size() == 2
    assert len(space.sample(2, unique=True, random_state=0)) == 2
    with pytest.raises(ValueError, match="could not draw 3 distinct"):
        space.sample(3, unique=True, random_state=0)


def test_bad_sampling_arguments():
    space = get_space("resnet")
    with pytest.raises(ValueError, match="strategy must be"):
        space.sample(5, strategy="greedy")
    with pytest.raises(ValueError, match="non-negative int"):
        space.sample(-1)


def test_user_defined_space_with_zero_depth_units_and_globals():
    space = SearchSpace(
        "mine",
        3,
        [(0, 2), (1, 3), (0, 1)],
        block_choices={"kernel_size": (3, 5)},
        unit_choices={"width": (16, 32)},
        global_choices={"resolution": (96, 128)},
    )
    assert space.min_depth == 1 and space.max_depth == 6
    expected = (1 + 2 + 4) * 2 * (2 + 4 + 8) * 2 * (1 + 2) * 2 * 2
    assert space.size() == expected
    archs = space.sample(200, "balanced", n_bins=3, random_state=0)
    assert np.bincount(space.bin_index(archs, 3)).tolist() == [67, 67, 66]
    for arch in archs:
        assert space.validate(arch) == arch
        assert arch["resolution"] in (96, 128)
    with pytest.raises(ValueError, match="has no model builder"):
        space.build_model(archs[0])


def test_space_definition_errors():
    with pytest.raises(ValueError, match="depth range"):
        SearchSpace("bad", 2, (3, 1), block_choices={"k": (3,)})
    with pytest.raises(ValueError, match="has no choices"):
        SearchSpace("bad", 2, (1, 2), block_choices={"k": ()})
    with pytest.raises(ValueError, match="gives 3 ranges for 2 units"):
        SearchSpace("bad", 2, [(1, 2)] * 3, block_choices={"k": (3,)})


def test_space_pickles_with_builder():
    space = get_space("resnet")
    clone = pickle.loads(pickle.dumps(space))
    assert clone == space
    assert clone.builder == space.builder


def test_block_codes_fast_path_matches_validated_path():
    space = get_space("resnet")
    arch = space.sample(1, random_state=4)[0]
    loose = json.loads(json.dumps(arch).replace("0.6667", "0.667"))
    assert space.block_codes(loose) == space.block_codes(arch)
    combos = space.unit_block_combinations
    for unit, codes in enumerate(space.block_codes(arch)):
        assert [combos[c] for c in codes] == list(
            zip(arch["kernel_size"][unit], arch["expand_ratio"][unit])
        )
    arch["kernel_size"][0][0] = 9
    with pytest.raises(ValueError, match="unit 0, block 0: field 'kernel_size' has value 9"):
        space.block_codes(arch)


def test_as_arch_list_accepts_series_and_rejects_single_dict():
    pd = pytest.importorskip("pandas")
    archs = get_space("resnet").sample(3, random_state=0)
    assert as_arch_list(pd.Series(archs)) == archs
    assert as_arch_list(pd.DataFrame({"arch": archs})) == archs
    with pytest.raises(ValueError, match="single dict"):
        as_arch_list(archs[0])


def test_validate_many_names_the_bad_architecture():
    space = get_space("resnet")
    archs = space.sample(3, random_state=0)
    assert space.validate_many(archs) == archs
    archs[2] = {**archs[2], "depth": [9, 1, 1, 1]}
    with pytest.raises(ValueError, match=r"^architecture 2: resnet: unit 0: depth 9"):
        space.validate_many(archs)
    with pytest.raises(ValueError, match=r"^row 3: resnet: unit 0"):
        space.validate_many(archs, lambda i: f"row {i + 1}")


# ------------------------------------------------- space logic owned by SearchSpace
def test_bin_ranges_quotas_and_interleave():
    space = get_space("resnet")
    assert space.bin_ranges(5) == [(4, 8), (9, 13), (14, 18), (19, 23), (24, 28)]
    ranges = get_space("densenet").bin_ranges(5)
    assert ranges[0][0] == 5 and ranges[-1][1] == 100
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:]))
    # every total depth of a range lands in that bin
    for b, (low, high) in enumerate(space.bin_ranges(3)):
        archs = [{"depth": [t // 4 + (u < t % 4) for u in range(4)]} for t in range(low, high + 1)]
        assert set(space.bin_index(archs, 3).tolist()) == {b}
    assert SearchSpace.bin_quotas(7, 5).tolist() == [2, 2, 1, 1, 1]
    assert SearchSpace.interleave([[1, 2, 3], [], ["a", "b"]]) == [1, "a", 2, "b", 3]


def test_mixed_strategy_is_half_balanced_half_random_interleaved():
    space = get_space("resnet")
    archs, labels = space.sample(9, "mixed", random_state=3, unique=True, return_labels=True)
    assert labels == ["balanced", "random"] * 4 + ["balanced"]
    assert len({arch_key(a) for a in archs}) == 9
    balanced = [a for a, lab in zip(archs, labels) if lab == "balanced"]
    assert np.bincount(space.bin_index(balanced, 5), minlength=5).tolist() == [1] * 5
    assert space.sample(9, "mixed", random_state=3, unique=True) == archs
    assert space.sample(9, "mixed", random_state=4, unique=True) != archs
    # many draws: the random half piles up in the middle, the balanced half does not
    archs, labels = space.sample(2000, "mixed", random_state=0, return_labels=True)
    labels = np.array(labels)
    bins = space.bin_index(archs, 5)
    assert np.bincount(bins[labels == "balanced"], minlength=5).tolist() == [200] * 5
    assert np.bincount(bins[labels == "random"], minlength=5)[0] < 100
    _, labels = space.sample(6, "random", random_state=0, return_labels=True)
    assert labels == ["random"] * 6


@pytest.mark.parametrize("name", ["resnet", "densenet", "fbnet"])
def test_sample_in_bin_stays_in_the_bin_and_is_distinct(name):
    space = get_space(name)
    for b in (0, 2, 4):
        archs = space.sample_in_bin(b, 30, 5, random_state=b)
        assert len(archs) == 30 and set(space.bin_index(archs, 5).tolist()) == {b}
        assert all(space.validate(a) == a for a in archs)
        keys = {arch_key(a) for a in archs}
        assert len(keys) == 30
        more = space.sample_in_bin(b, 30, 5, random_state=b, exclude=archs)
        assert len(more) == 30 and not keys & {arch_key(a) for a in more}
        assert space.sample_in_bin(b, 30, 5, random_state=b, exclude=keys) == more
    # every total depth of the bin is drawn
    totals = set(space.total_depth(space.sample_in_bin(1, 400, 5, random_state=0)).tolist())
    low, high = space.bin_ranges(5)[1]
    assert totals == set(range(low, high + 1))


def test_sample_in_bin_returns_fewer_only_when_the_bin_runs_out():
    space = SearchSpace("tiny", 2, (1, 2), block_choices={"k": (3, 5)})
    # bin 0 of 3: total depth 2, i.e. depth [1, 1]: 4 architectures
    assert len(space.sample_in_bin(0, 10, 3, random_state=0)) == 4
    with pytest.raises(ValueError, match="bin must be an int in 0..2"):
        space.sample_in_bin(3, 1, 3)
    with pytest.raises(ValueError, match="k must be a non-negative int"):
        space.sample_in_bin(0, -1, 3)
    with pytest.raises(ValueError, match="single dict"):
        space.sample_in_bin(0, 1, 3, exclude={"depth": [1, 1]})


def test_load_arch_and_input_resolution():
    from esm_sklearn.spaces import load_arch

    assert load_arch('{"depth": [1]}') == {"depth": [1]}
    arch = {"depth": [1]}
    assert load_arch(arch) is arch
    with pytest.raises(ValueError, match="^row 3: architecture is not valid JSON"):
        load_arch("{oops", "row 3")
    with pytest.raises(ValueError, match="must be a dict or JSON string, got list"):
        load_arch([1, 2])
    resnet, ofa = get_space("resnet"), get_space("ofa_mobilenetv3")
    sampled = ofa.sample(1, random_state=0)[0]
    assert resnet.input_resolution(None) == 224
    assert ofa.input_resolution(json.dumps(sampled)) == sampled["resolution"]
    assert ofa.input_resolution(sampled, 96) == 96
    for bad in (0, 1.5, True, "224"):
        with pytest.raises(ValueError, match="resolution must be a positive int"):
            resnet.input_resolution(None, bad)


def test_builder_named_by_dotted_path():
    space = get_space("resnet")
    assert space.builder == "esm_sklearn.models:build_from_macro"
    mine = SearchSpace("mine", 1, (1, 1), block_choices={"k": (3,)}, builder="math:nope")
    with pytest.raises(ValueError, match="cannot resolve builder 'math:nope'"):
        mine.build_model({"depth": [1], "k": [[3]]})
    with pytest.raises(ValueError, match="no macro-architecture for space 'mine'"):
        mine.block_specs()


# ---------------------------------------------------------------- import graph
PACKAGE = Path(__file__).resolve().parents[1] / "esm_sklearn"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Edges between esm_sklearn modules from every import statement, at any depth."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from x import m` imports submodule x.m where there is one, else x
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def test_no_import_cycle_in_the_package():
    graph = _import_graph()
    assert {"esm_sklearn.macro", "esm_sklearn.spaces", "esm_sklearn.models"} <= set(graph)
    assert "esm_sklearn.models" not in graph["esm_sklearn.spaces"]
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*path, nxt])}")
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_space_modules_import_without_torch():
    # The package's __init__ is bypassed, so this checks these modules' own imports.
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('esm_sklearn'); pkg.__path__ = [{str(PACKAGE)!r}]\n"
        "sys.modules['esm_sklearn'] = pkg\n"
        "import esm_sklearn.spaces, esm_sklearn.macro, esm_sklearn.encoders, esm_sklearn.metrics\n"
        "space = esm_sklearn.spaces.get_space('resnet')\n"
        "space.arch_block_specs(space.sample(1, random_state=0)[0])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'skorch')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_vectorised_sampling_draws_the_documented_distribution():
    space = SearchSpace(
        "toy", 2, (1, 3), block_choices={"k": (3, 5)}, unit_choices={"w": (8, 16, 32)},
        global_choices={"r": (96, 128)},
    )
    archs = space.sample(15000, "balanced", n_bins=5, random_state=0)
    depths = [tuple(a["depth"]) for a in archs]
    # total 4 (bin 2): the three depth vectors with that total, equally often
    with_total_4 = [d for d in depths if sum(d) == 4]
    assert len(with_total_4) == 3000
    for vector in [(1, 3), (2, 2), (3, 1)]:
        assert abs(with_total_4.count(vector) - 1000) < 120, vector
    rand = space.sample(15000, random_state=1)
    first_unit = np.bincount([a["depth"][0] for a in rand], minlength=4)[1:]
    assert np.all(np.abs(first_unit - 5000) < 300)
    kernels = np.array([k for a in rand for unit in a["k"] for k in unit])
    assert abs((kernels == 3).mean() - 0.5) < 0.02
    widths = np.bincount([w for a in rand for w in a["w"]], minlength=33)[[8, 16, 32]]
    assert np.all(np.abs(widths - 10000) < 400)
    assert abs(np.mean([a["r"] == 96 for a in rand]) - 0.5) < 0.02
    # lists are fresh objects: changing one architecture leaves the others alone
    archs[0]["k"][0].append(3)
    assert all(len(a["k"][0]) == a["depth"][0] for a in archs[1:])
