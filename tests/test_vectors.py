"""The fixed-length codec (esm_sklearn.vectors) and its Optuna adapter."""

import json

import numpy as np
import pytest
from conftest import all_spaces, toy_space

from esm_sklearn import get_space
from esm_sklearn import vectors as vec


@pytest.mark.parametrize("space", all_spaces(), ids=lambda s: s.name)
def test_round_trip_is_exact_for_thousands_of_archs(space):
    archs = space.sample(2000, random_state=0) + space.sample(1000, strategy="balanced", random_state=1)
    V = space.to_vector(archs)
    assert V.shape == (3000, len(space.vector_columns)) and V.dtype == np.int64
    assert space.from_vector(V) == archs
    bounds = space.vector_bounds
    assert ((V >= bounds[:, 0]) & (V <= bounds[:, 1])).all()
    # depth first, as the depths themselves
    assert space.vector_columns[: space.n_units] == [f"depth_u{u}" for u in range(space.n_units)]
    assert (V[:, : space.n_units] == [a["depth"] for a in archs]).all()


@pytest.mark.parametrize("space", all_spaces(), ids=lambda s: s.name)
def test_every_in_range_row_is_an_architecture_and_padding_is_ignored(space):
    rng = np.random.RandomState(0)
    bounds = space.vector_bounds
    V = rng.randint(bounds[:, 0], bounds[:, 1] + 1, size=(500, len(bounds)))
    archs = space.from_vector(V)
    assert all(space.validate(a) == a for a in archs)
    W = space.to_vector(archs)
    used = W != 0
    assert (W[used] == V[used]).all()  # only padding (set to 0) changed
    assert space.from_vector(W) == archs
    assert (space.from_vector(W.astype(float))) == archs  # integral floats are accepted


def test_layout_of_the_builtin_spaces():
    resnet = get_space("resnet")
    cols = resnet.vector_columns
    assert len(cols) == 4 + 4 * 7 and cols[4] == "block_u0_b0" and cols[-1] == "block_u3_b6"
    assert resnet.vector_bounds[4].tolist() == [0, len(resnet.block_combinations) - 1]
    dense = get_space("densenet")  # one block combination: no block columns
    assert dense.vector_columns == [f"depth_u{u}" for u in range(5)] + [
        f"kernel_size_u{u}" for u in range(5)
    ]
    ofa = get_space("ofa_mobilenetv3")
    assert ofa.vector_columns[-1] == "resolution"
    assert ofa.vector_bounds[-1].tolist() == [0, len(ofa.global_choices["resolution"]) - 1]
    fbnet = get_space("fbnet")
    assert fbnet.vector_bounds[:7, 0].tolist() == [0] * 7
    assert len(fbnet.vector_columns) == 7 + 22
    choices = fbnet.vector_choices()
    assert [c for c, _ in choices] == fbnet.vector_columns
    assert all(v == list(range(lo, hi + 1)) for (_, v), (lo, hi) in zip(choices, fbnet.vector_bounds))
    # a block index means the space's combination of that index
    arch = fbnet.from_vector([[1, 0, 0, 0, 0, 0, 0] + [5] + [0] * 21])[0]
    combo = fbnet.block_combinations[5]
    assert [arch[f][0] for f in fbnet.block_choices] == [[v] for v in combo]


def test_to_vector_canonicalises_and_names_bad_architectures():
    space = get_space("resnet")
    arch = {"space": "resnet", "depth": [1, 1, 1, 1], "kernel_size": [[3], [5], [7], [3]],
            "expand_ratio": [[0.667], [0.5], [1], [0.5]]}
    V = space.to_vector([json.dumps(arch)])
    assert space.from_vector(V)[0] == space.validate(arch)
    bad = dict(arch, kernel_size=[[3], [4], [7], [3]])
    with pytest.raises(ValueError, match=r"architecture 1: .*unit 1, block 0.*kernel_size"):
        space.to_vector([arch, bad])
    with pytest.raises(ValueError, match="single dict"):
        space.to_vector(arch)
    fbnet = get_space("fbnet")
    ok = fbnet.sample(1, random_state=0)[0]
    u = next(u for u, d in enumerate(ok["depth"]) if d)
    not_allowed = json.loads(json.dumps(ok))
    not_allowed["expand_ratio"][u][0], not_allowed["groups"][u][0] = 6, 2
    with pytest.raises(ValueError, match="not allowed"):
        fbnet.to_vector([not_allowed])


def test_from_vector_errors_name_row_column_and_range():
    space = get_space("resnet")
    V = space.to_vector(space.sample(3, random_state=0))
    V[2, 0] = 9
    with pytest.raises(ValueError, match=r"row 2, column 'depth_u0': value 9 outside the allowed range 1\.\.7"):
        space.from_vector(V)
    V[2, 0] = 1
    V[1, 5] = -1
    with pytest.raises(ValueError, match=r"row 1, column 'block_u0_b1': value -1 outside .* 0\.\.8"):
        space.from_vector(V)
    W = V.astype(float)
    W[1, 5] = 0.5
    with pytest.raises(ValueError, match=r"row 1, column 'block_u0_b1': value 0\.5 is not an integer"):
        space.from_vector(W)
    W[1, 5] = np.nan
    with pytest.raises(ValueError, match="is not an integer"):
        space.from_vector(W)
    with pytest.raises(ValueError, match=r"shape \(n, 32\).*got shape \(32,\)"):
        space.from_vector(V[0])
    with pytest.raises(ValueError, match="must be integers"):
        space.from_vector(np.array([["a"] * 32]))
    with pytest.raises(ValueError, match="lack column"):
        vec.from_params(space, {"depth_u0": 1})


def test_from_params_and_the_module_functions():
    space = toy_space()
    archs = space.sample(20, random_state=3)
    V = vec.to_vector(space, archs)
    assert vec.from_vector(space, V) == archs
    for a, row in zip(archs, V.tolist()):
        assert vec.from_params(space, dict(zip(space.vector_columns, row))) == a


class FakeTrial:
    """Records the suggest calls of vectors.suggest and answers from a RandomState."""

    def __init__(self, seed):
        self.rng = np.random.RandomState(seed)
        self.calls = []

    def suggest_int(self, name, low, high):
        self.calls.append(("int", name, low, high))
        return int(self.rng.randint(low, high + 1))

    def suggest_categorical(self, name, choices):
        self.calls.append(("cat", name, tuple(choices)))
        return choices[self.rng.randint(len(choices))]


@pytest.mark.parametrize("space", all_spaces(), ids=lambda s: s.name)
def test_suggest_asks_every_column_every_time(space):
    seen = set()
    for seed in range(30):
        trial = FakeTrial(seed)
        arch = space.suggest(trial)
        assert space.validate(arch) == arch
        assert [c[1] for c in trial.calls] == space.vector_columns  # fixed length, fixed order
        assert all(c[0] == "int" for c in trial.calls[: space.n_units])
        assert all(c[0] == "cat" for c in trial.calls[space.n_units :])
        seen.add(json.dumps(arch, sort_keys=True))
    assert len(seen) > 1


def test_optuna_nsga2_evolves_a_fixed_length_genome():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space("resnet")
    study = optuna.create_study(
        directions=["minimize", "maximize"],
        sampler=optuna.samplers.NSGAIISampler(population_size=8, seed=0),
    )
    archs = {}

    def objective(trial):
        arch = space.suggest(trial)
        archs[trial.number] = arch
        return sum(arch["depth"]), sum(k for unit in arch["kernel_size"] for k in unit)

    study.optimize(objective, n_trials=24)
    for t in study.trials:
        assert sorted(t.params) == sorted(space.vector_columns)
        assert vec.from_params(space, t.params) == archs[t.number]
    again = optuna.create_study(
        directions=["minimize", "maximize"],
        sampler=optuna.samplers.NSGAIISampler(population_size=8, seed=0),
    )
    again.optimize(lambda t: (sum(space.suggest(t)["depth"]), 0), n_trials=3)
    assert [t.params for t in again.trials] == [t.params for t in study.trials[:3]]
