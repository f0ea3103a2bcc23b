"""mutate, crossover and neighbours (esm_sklearn.operators) on built-in and user-defined spaces."""

import numpy as np
import pytest
from conftest import all_spaces, toy_space

from esm_sklearn import SearchSpace, get_space
from esm_sklearn import operators as ops


def ids(space):
    return space.name


def seen_values(space, archs) -> dict:
    """field -> set of values taken (per unit for depth and per-unit fields)."""
    seen = {}
    for a in archs:
        for u, d in enumerate(a["depth"]):
            seen.setdefault(("depth", u), set()).add(d)
        for f in space.block_choices:
            for unit in a[f]:
                seen.setdefault(f, set()).update(unit)
        for f in space.unit_choices:
            for u, v in enumerate(a[f]):
                seen.setdefault((f, u), set()).add(v)
        for f in space.global_choices:
            seen.setdefault(f, set()).add(a[f])
    return seen


def every_value(space) -> dict:
    want = {("depth", u): set(range(lo, hi + 1)) for u, (lo, hi) in enumerate(space.depth_bounds)}
    for j, f in enumerate(space.block_choices):
        want[f] = {c[j] for c in space.block_combinations}
    for f, vals in space.unit_choices.items():
        for u in range(space.n_units):
            want[(f, u)] = set(vals)
    for f, vals in space.global_choices.items():
        want[f] = set(vals)
    return want


def n_sites_differing(space, a, b) -> int:
    """Sites that differ (a block's combination, a depth step, a unit or global choice)."""
    n = 0
    for u in range(space.n_units):
        da, db = a["depth"][u], b["depth"][u]
        if da != db:
            n += abs(da - db)
        blocks_a = list(zip(*(a[f][u] for f in space.block_choices)))
        blocks_b = list(zip(*(b[f][u] for f in space.block_choices)))
        n += sum(x != y for x, y in zip(blocks_a, blocks_b))
        for f in space.unit_choices:
            n += a[f][u] != b[f][u]
    return n + sum(a[f] != b[f] for f in space.global_choices)


@pytest.mark.parametrize("space", all_spaces(), ids=ids)
def test_mutate_is_valid_different_neighbour_and_reaches_every_value(space):
    starts = space.sample(400, random_state=0)
    rng = np.random.RandomState(1)
    children = []
    for a in starts:
        child = space.mutate(a, random_state=rng)
        assert space.validate(child) == child
        assert child != a
        assert n_sites_differing(space, a, child) == 1
        children.append(child)
    for a, child in zip(starts[:20], children[:20]):
        assert child in space.neighbours(a)
    # Chains of mutations from one start walk over the whole space.
    walk, arch = [], starts[0]
    for _ in range(3000):
        arch = space.mutate(arch, random_state=rng)
        walk.append(arch)
    seen = seen_values(space, children + walk)
    for key, values in every_value(space).items():
        assert seen.get(key, set()) >= values, key


@pytest.mark.parametrize("space", all_spaces(), ids=ids)
def test_mutate_keeps_depth_unbiased(space):
    rng = np.random.RandomState(0)
    starts = space.sample(1500, random_state=1)
    change = [sum(space.mutate(a, random_state=rng)["depth"]) - sum(a["depth"]) for a in starts]
    assert set(change) <= {-1, 0, 1}
    up, down = change.count(1), change.count(-1)
    if up + down:  # within 5 standard deviations of a fair coin
        assert abs(up - down) <= 5 * np.sqrt(up + down) + 1


@pytest.mark.parametrize("space", all_spaces(), ids=ids)
def test_neighbours_are_every_single_change(space):
    for a in space.sample(15, random_state=2):
        nbrs = space.neighbours(a)
        keys = {str(sorted(n.items())) for n in nbrs}
        assert len(keys) == len(nbrs), "duplicates"
        for n in nbrs:
            assert space.validate(n) == n
            assert n_sites_differing(space, a, n) == 1
        n_combos = len(space.block_combinations)
        expected = sum(d * (n_combos - 1) if n_combos > 1 else 0 for d in a["depth"])
        expected += sum(
            (d > lo) + (d < hi) * n_combos for d, (lo, hi) in zip(a["depth"], space.depth_bounds)
        )
        expected += space.n_units * sum(len(v) - 1 for v in space.unit_choices.values())
        expected += sum(len(v) - 1 for v in space.global_choices.values())
        assert len(nbrs) == expected
    # Growth appends every allowed combination; shrinking drops the last block.
    a = space.sample(1, random_state=3)[0]
    for u, (d, (lo, hi)) in enumerate(zip(a["depth"], space.depth_bounds)):
        grown = [n for n in space.neighbours(a) if n["depth"][u] == d + 1]
        assert len(grown) == (n_combos if d < hi else 0)
        for f in space.block_choices:
            assert all(n[f][u][:d] == a[f][u] for n in grown)
        shrunk = [n for n in space.neighbours(a) if n["depth"][u] == d - 1]
        assert len(shrunk) == (d > lo)
        for f in space.block_choices:
            assert all(n[f][u] == a[f][u][:-1] for n in shrunk)


@pytest.mark.parametrize("space", all_spaces(), ids=ids)
def test_crossover_is_valid_and_mixes_units(space):
    a_list = space.sample(300, random_state=4)
    b_list = space.sample(300, random_state=5)
    rng = np.random.RandomState(0)
    from_b = 0
    for a, b in zip(a_list, b_list):
        child = space.crossover(a, b, random_state=rng)
        assert space.validate(child) == child
        for u in range(space.n_units):
            parents = [p for p in (a, b) if all(
                p[f][u] == child[f][u] for f in ["depth", *space.block_choices, *space.unit_choices]
            )]
            assert parents, f"unit {u} comes from neither parent"
            from_b += parents[-1] is b and parents[0] is not a
        for f in space.global_choices:
            assert child[f] in (a[f], b[f])
    total = 300 * space.n_units
    assert 0.4 * total < from_b < 0.6 * total


@pytest.mark.parametrize("space", all_spaces(), ids=ids)
def test_operators_repeat_with_a_seed(space):
    a, b = space.sample(2, random_state=6)
    assert space.mutate(a, random_state=7) == space.mutate(a, random_state=7)
    assert space.crossover(a, b, random_state=7) == space.crossover(a, b, random_state=7)
    r1, r2 = np.random.RandomState(8), np.random.RandomState(8)
    assert [space.mutate(a, r1) for _ in range(5)] == [space.mutate(a, r2) for _ in range(5)]
    assert space.neighbours(a) == space.neighbours(a)


def test_operators_accept_json_and_non_canonical_values_and_return_fresh_dicts():
    import json

    space = get_space("resnet")
    arch = {"space": "resnet", "depth": [1, 1, 1, 2], "kernel_size": [[3], [5], [7], [3, 3]],
            "expand_ratio": [[0.667], [0.5], [1], [0.5, 0.5]]}
    child = space.mutate(json.dumps(arch), random_state=0)
    assert space.validate(child) == child
    assert space.neighbours(arch)[-1]["expand_ratio"][0] == [0.6667]  # canonical value
    nbrs = space.neighbours(arch)
    nbrs[0]["kernel_size"][0].append(99)  # no list shared between outputs
    assert all(99 not in n["kernel_size"][0] for n in nbrs[1:])
    assert arch["expand_ratio"][0] == [0.667]  # the input is untouched


def test_operators_reject_invalid_architectures_and_a_single_arch_space():
    space = get_space("resnet")
    bad = space.sample(1, random_state=0)[0]
    bad["kernel_size"][0][0] = 4
    with pytest.raises(ValueError, match="kernel_size"):
        space.mutate(bad)
    with pytest.raises(ValueError, match="kernel_size"):
        space.neighbours(bad)
    with pytest.raises(ValueError, match="kernel_size"):
        space.crossover(space.sample(1, random_state=0)[0], bad)
    one = SearchSpace("one", 1, (2, 2), block_choices={"k": (3,)})
    arch = one.sample(1, random_state=0)[0]
    assert one.neighbours(arch) == []
    with pytest.raises(ValueError, match="single architecture"):
        one.mutate(arch)


def test_module_functions_equal_the_methods():
    space = toy_space()
    a, b = space.sample(2, random_state=0)
    assert ops.mutate(space, a, 3) == space.mutate(a, 3)
    assert ops.crossover(space, a, b, 3) == space.crossover(a, b, 3)
    assert ops.neighbours(space, a) == space.neighbours(a)
