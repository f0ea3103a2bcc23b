import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils import estimator_checks

from esm_sklearn import (
    FCCEncoder,
    FeatureCountEncoder,
    FeatureEncoder,
    LookupTableEncoder,
    OneHotArchEncoder,
    StatisticalEncoder,
    get_space,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
H200 = SHARED / "datasets" / "h200"
SPACES = ["resnet", "mobilenetv3", "densenet", "ofa_mobilenetv3", "fbnet"]
ENCODERS = [OneHotArchEncoder, FeatureEncoder, FeatureCountEncoder, FCCEncoder, StatisticalEncoder]

ARCH = {
    "space": "resnet",
    "depth": [2, 1, 3, 1],
    "kernel_size": [[3, 5], [7], [3, 3, 5], [7]],
    "expand_ratio": [[0.5, 1.0], [0.6667], [1.0, 0.5, 0.5], [0.6667]],
}


def needs(*names):
    missing = [n for n in names if not (H200 / n).exists()]
    return pytest.mark.skipif(bool(missing), reason=f"shared data absent: {missing}")


def _fmt(value) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _unit_values(space, arch, unit, field):
    """Values of ``field`` over the blocks of ``unit`` (a unit choice repeats)."""
    if field in space.block_choices:
        return list(arch[field][unit])
    return [arch[field][unit]] * arch["depth"][unit]


def _reference(cls, space, arch, name: str) -> float:
    """The value a column should hold, computed from its name and the arch dict."""
    if "__" not in name:  # global choice
        if "=" in name:
            field, value = name.split("=")
            return float(_fmt(arch[field]) == value)
        return float(arch[name])
    unit_part, *rest = name.split("__")
    unit = int(unit_part.removeprefix("unit"))
    depth = arch["depth"][unit]
    if rest[0].startswith("block"):  # one-hot or feature slot
        slot = int(rest[0].removeprefix("block"))
        field, _, value = rest[1].partition("=")
        if slot >= depth:
            return 0.0
        got = arch[field][unit]
        got = got if field in space.unit_choices else got[slot]
        return float(_fmt(got) == value) if value else float(got)
    if rest == ["depth"]:
        return float(depth)
    if rest[-1] in ("mean", "std"):
        values = _unit_values(space, arch, unit, rest[0])
        if not values:
            return 0.0
        return float(np.mean(values) if rest[-1] == "mean" else np.std(values))
    conditions = [part.split("=") for part in rest]
    if conditions[0][0] in space.unit_choices and cls is FeatureEncoder:
        field, *value = conditions[0]
        got = arch[field][unit]
        return float(_fmt(got) == value[0]) if value else float(got)
    # Counts: blocks of the unit matching every field=value of the name.
    columns = [_unit_values(space, arch, unit, field) for field, _ in conditions]
    return float(
        sum(
            all(_fmt(v) == want for v, (_, want) in zip(block, conditions, strict=True))
            for block in zip(*columns, strict=True)
        )
    )


def _expected_width(cls, space) -> int:
    highs = [high for _, high in space.depth_bounds]
    nb, nu = len(space.block_choices), len(space.unit_choices)
    vb = sum(len(c) for c in space.block_choices.values())
    vu = sum(len(c) for c in space.unit_choices.values())
    n_globals = len(space.global_choices)
    if cls is OneHotArchEncoder:
        return sum(h * (vu + vb) for h in highs) + sum(len(c) for c in space.global_choices.values())
    if cls is FeatureEncoder:
        return sum(1 + nu + h * nb for h in highs) + n_globals
    if cls is FeatureCountEncoder:
        return space.n_units * (vb + vu) + n_globals
    if cls is FCCEncoder:
        return space.n_units * len(space.unit_block_combinations) + n_globals
    return space.n_units * (1 + 2 * (nb + nu)) + n_globals


@pytest.fixture(scope="module")
def samples():
    return {name: get_space(name).sample(25, random_state=3) for name in SPACES}


@pytest.mark.parametrize("name", SPACES)
@pytest.mark.parametrize("cls", ENCODERS, ids=lambda c: c.__name__)
def test_shapes_names_and_values_match_the_definitions(cls, name, samples):
    space, archs = get_space(name), samples[name]
    enc = cls().fit(archs)
    X = enc.transform(archs)
    names = enc.get_feature_names_out()
    width = _expected_width(cls, space)
    assert X.shape == (len(archs), width) == (len(archs), enc.n_features_out_)
    assert len(set(names)) == len(names) == width
    assert X.dtype == np.float32
    assert enc.space_ == space
    expected = np.array([[_reference(cls, space, a, n) for n in names] for a in archs])
    np.testing.assert_allclose(X, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "cls, name, column",
    [
        (OneHotArchEncoder, "resnet", "unit0__block1__kernel_size=5"),
        (OneHotArchEncoder, "densenet", "unit0__block19__kernel_size=3"),
        (OneHotArchEncoder, "ofa_mobilenetv3", "resolution=128"),
        (FeatureEncoder, "resnet", "unit0__block1__kernel_size"),
        (FeatureEncoder, "densenet", "unit0__kernel_size"),
        (FeatureEncoder, "resnet", "unit0__depth"),
        (FeatureCountEncoder, "resnet", "unit0__kernel_size=3"),
        (FCCEncoder, "resnet", "unit2__kernel_size=5__expand_ratio=0.6667"),
        (FCCEncoder, "ofa_mobilenetv3", "resolution"),
        (StatisticalEncoder, "resnet", "unit0__kernel_size__std"),
    ],
)
def test_documented_column_names(cls, name, column, samples):
    assert column in cls().fit(samples[name]).get_feature_names_out()


def test_fcc_fbnet_has_only_allowed_combinations(samples):
    space = get_space("fbnet")
    names = FCCEncoder().fit(samples["fbnet"]).get_feature_names_out()
    assert len(names) == space.n_units * len(space.block_combinations) == 7 * 8
    assert "unit1__kernel_size=3__expand_ratio=3__groups=2" not in names


def _shuffled(arch, rng):
    out = json.loads(json.dumps(arch))
    for unit, depth in enumerate(arch["depth"]):
        order = rng.sample(range(depth), depth)
        for field in ("kernel_size", "expand_ratio"):
            out[field][unit] = [arch[field][unit][j] for j in order]
    return out


def test_fcc_order_invariant_linear_and_sums_to_depth(samples):
    space = get_space("resnet")
    archs = samples["resnet"]
    enc = FCCEncoder().fit(archs)
    X = enc.transform(archs)
    rng = random.Random(0)
    np.testing.assert_array_equal(enc.transform([_shuffled(a, rng) for a in archs]), X)
    n_codes = len(space.unit_block_combinations)
    for arch, row in zip(archs, X, strict=True):
        # Sum over blocks of their one-hot combination vectors.
        blocks = np.zeros((space.n_units, n_codes))
        for unit, codes in enumerate(space.block_codes(arch)):
            for code in codes:
                blocks[unit, code] += 1
        np.testing.assert_array_equal(row, blocks.ravel())
        np.testing.assert_array_equal(row.reshape(space.n_units, -1).sum(axis=1), arch["depth"])


@pytest.mark.parametrize("cls", ENCODERS, ids=lambda c: c.__name__)
def test_input_containers_give_the_same_output(cls, samples):
    archs = samples["resnet"]
    enc = cls().fit(archs)
    X = enc.transform(archs)
    strings = [json.dumps(a) for a in archs]
    for data in (
        strings,
        pd.Series(archs),
        pd.Series(strings),
        pd.DataFrame({"arch": strings}),
        np.array(strings, dtype=object).reshape(-1, 1),
        tuple(archs),
    ):
        np.testing.assert_array_equal(enc.transform(data), X)
    np.testing.assert_array_equal(cls().fit_transform(pd.Series(strings)), X)


def test_near_and_non_canonical_values_are_canonicalised():
    enc = FCCEncoder().fit([ARCH])
    X = enc.transform([ARCH])
    near = json.loads(json.dumps(ARCH))
    near["expand_ratio"][1] = [0.667]
    near["expand_ratio"][3] = [2 / 3]
    assert np.array_equal(enc.transform([near]), X)
    odd = json.loads(json.dumps(ARCH))
    odd["depth"] = [np.int64(2), 1.0, 3, 1]
    odd["kernel_size"][0] = (3.0, np.int64(5))
    del odd["space"]
    assert np.array_equal(enc.transform([odd, ARCH]), np.vstack([X, X]))
    one_hot = OneHotArchEncoder().fit([ARCH])
    assert np.array_equal(one_hot.transform([near]), one_hot.transform([ARCH]))


def test_set_output_pandas():
    archs = get_space("resnet").sample(5, random_state=0)
    enc = StatisticalEncoder().set_output(transform="pandas")
    frame = enc.fit_transform(archs)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(enc.get_feature_names_out())
    assert isinstance(enc.transform(pd.Series(archs)), pd.DataFrame)
    np.testing.assert_array_equal(frame.to_numpy(), StatisticalEncoder().fit_transform(archs))


def test_dtype_parameter(samples):
    archs = samples["resnet"]
    assert FCCEncoder().fit_transform(archs).dtype == np.float32
    assert FCCEncoder(dtype=np.float64).fit_transform(archs).dtype == np.float64
    counts = FCCEncoder(dtype=np.int16).fit_transform(archs)
    assert counts.dtype == np.int16
    np.testing.assert_array_equal(counts, FCCEncoder().fit_transform(archs))
    with pytest.raises(ValueError, match="floating-point dtype"):
        StatisticalEncoder(dtype=np.int32).fit(archs)
    with pytest.raises(ValueError, match="not a numpy dtype"):
        FCCEncoder(dtype="no-such-type").fit(archs)


def test_space_inference_and_explicit_space():
    bare = {k: v for k, v in ARCH.items() if k != "space"}
    with pytest.raises(ValueError, match="architecture 1 has no 'space' field"):
        FCCEncoder().fit([ARCH, bare])
    other = get_space("densenet").sample(1, random_state=0)[0]
    with pytest.raises(ValueError, match="several spaces"):
        FCCEncoder().fit([ARCH, other])
    with pytest.raises(ValueError, match="no architectures"):
        FCCEncoder().fit([])
    enc = FCCEncoder(space="resnet").fit([bare])
    assert enc.space_.name == "resnet"
    np.testing.assert_array_equal(enc.transform([bare]), enc.transform([ARCH]))
    assert FCCEncoder(space=get_space("resnet")).fit([]).transform([ARCH]).shape == (1, 36)
    with pytest.raises(ValueError, match="unknown search space 'vgg'"):
        FCCEncoder(space="vgg").fit([ARCH])


@pytest.mark.parametrize("cls", ENCODERS, ids=lambda c: c.__name__)
def test_errors_name_the_problem(cls):
    enc = cls().fit([ARCH])
    other = get_space("mobilenetv3").sample(1, random_state=0)[0]
    with pytest.raises(ValueError, match="architecture 1: .*space 'mobilenetv3' given to space 'resnet'"):
        enc.transform([ARCH, other])
    bad = json.loads(json.dumps(ARCH))
    bad["kernel_size"][2][1] = 4
    with pytest.raises(ValueError, match=r"architecture 0: .*unit 2, block 1.*'kernel_size'.*\[3, 5, 7\]"):
        enc.transform([bad])
    with pytest.raises(ValueError, match=r"architecture 0: .*unit 2, block 1.*'kernel_size'"):
        cls().fit([bad])
    for field, value in (("kernel_size", "3"), ("expand_ratio", float("nan")), ("kernel_size", [3])):
        bad = json.loads(json.dumps(ARCH))
        bad[field][0][0] = value
        with pytest.raises(ValueError, match=f"architecture 2: .*unit 0, block 0.*'{field}'"):
            enc.transform([ARCH, ARCH, bad])
    deep = json.loads(json.dumps(ARCH))
    deep["depth"][1] = 8
    deep["kernel_size"][1] = [3] * 8
    deep["expand_ratio"][1] = [0.5] * 8
    with pytest.raises(ValueError, match="unit 1: depth 8 outside"):
        enc.transform([deep])
    short = json.loads(json.dumps(ARCH))
    short["expand_ratio"][0] = [0.5]
    with pytest.raises(ValueError, match="unit 0: field 'expand_ratio' must list 2 values"):
        enc.transform([short])
    with pytest.raises(ValueError, match="not valid JSON"):
        enc.transform(["{nope"])
    with pytest.raises(ValueError, match="single dict"):
        enc.transform(ARCH)


def _perturb(space, arch, rng):
    """A copy of ``arch`` with one random, possibly invalid, change."""
    arch = json.loads(json.dumps(arch))
    units = [u for u, d in enumerate(arch["depth"]) if d]
    kind = rng.randrange(6)
    if kind == 0 and space.block_choices and units:
        field = rng.choice(list(space.block_choices))
        unit = rng.choice(units)
        slot = rng.randrange(arch["depth"][unit])
        value = arch[field][unit][slot]
        arch[field][unit][slot] = rng.choice(
            [value + 0.0004, value * 1.01, 4, "3", None, True, np.int64(value) if float(value).is_integer() else value,
             float(value), [value], np.float32(value), float("nan")]
        )
    elif kind == 1:
        unit = rng.randrange(space.n_units)
        d = arch["depth"][unit]
        arch["depth"][unit] = rng.choice([float(d), d + 1, d - 1, np.int64(d), True, 2.5, str(d)])
    elif kind == 2 and space.block_choices:
        field = rng.choice(list(space.block_choices))
        unit = rng.randrange(space.n_units)
        values = arch[field][unit]
        arch[field][unit] = rng.choice(
            [tuple(values), "".join(map(str, values)), dict.fromkeys(values), np.array(values)]
        )
    elif kind == 3:
        rng.choice([lambda: arch.pop("space"), lambda: arch.update(space="other"),
                    lambda: arch.update(extra=1), lambda: arch.pop("depth")])()
    elif kind == 4 and space.unit_choices:
        field = rng.choice(list(space.unit_choices))
        unit = rng.randrange(space.n_units)
        arch[field][unit] = rng.choice([arch[field][unit] + 0.0001, 4, "3", float(arch[field][unit])])
    elif kind == 5 and space.global_choices:
        field = rng.choice(list(space.global_choices))
        arch[field] = rng.choice([arch[field] + 1, float(arch[field]), str(arch[field])])
    return arch


@pytest.mark.parametrize("name", SPACES)
def test_fast_path_agrees_with_validate(name, samples):
    """Whatever the fast reader accepts, validate accepts with the same meaning."""
    space = get_space(name)
    enc = FCCEncoder().fit(samples[name])
    one_hot = OneHotArchEncoder().fit(samples[name])
    rng = random.Random(name)
    accepted = rejected = 0
    for i in range(150):
        arch = _perturb(space, samples[name][i % len(samples[name])], rng)
        try:
            canon = space.validate(arch)
        except (ValueError, TypeError):
            with pytest.raises(ValueError, match="architecture 1: "):
                enc.transform([samples[name][0], arch])
            rejected += 1
            continue
        for encoder in (enc, one_hot):
            np.testing.assert_array_equal(encoder.transform([arch]), encoder.transform([canon]))
        accepted += 1
    assert accepted > 10 and rejected > 10


def test_fbnet_disallowed_combination_raises(samples):
    enc = FCCEncoder().fit(samples["fbnet"])
    arch = {
        "space": "fbnet", "depth": [1, 0, 0, 0, 0, 0, 0],
        "kernel_size": [[3], [], [], [], [], [], []],
        "expand_ratio": [[3], [], [], [], [], [], []],
        "groups": [[2], [], [], [], [], [], []],
    }
    with pytest.raises(ValueError, match="unit 0, block 0: combination.*not allowed"):
        enc.transform([arch])
    arch["groups"][0] = [1]
    assert enc.transform([arch]).sum() == 1


def test_unfitted_transform_raises():
    with pytest.raises(NotFittedError):
        FCCEncoder().transform([ARCH])


@pytest.mark.parametrize("cls", ENCODERS, ids=lambda c: c.__name__)
def test_pipeline_clone_and_grid_search(cls):
    space = get_space("resnet")
    archs = space.sample(40, random_state=1)
    y = space.total_depth(archs) * 1.5 + 2.0
    pipe = Pipeline([("enc", cls(dtype=np.float64)), ("reg", Ridge(alpha=1e-3))])
    assert pipe.fit(archs, y).score(archs, y) > 0.99
    copy = clone(pipe)
    assert copy.get_params()["enc__dtype"] is np.float64
    assert not hasattr(copy.named_steps["enc"], "space_")
    search = GridSearchCV(
        pipe, {"enc": [cls(), FCCEncoder()], "reg__alpha": [1e-3, 1.0]}, cv=3
    ).fit(pd.Series(archs), y)
    assert search.predict(archs[:3]).shape == (3,)


@pytest.mark.parametrize("cls", ENCODERS, ids=lambda c: c.__name__)
def test_joblib_round_trip(cls, tmp_path, samples):
    archs = samples["ofa_mobilenetv3"]
    enc = cls().fit(archs)
    joblib.dump(enc, tmp_path / "enc.joblib")
    loaded = joblib.load(tmp_path / "enc.joblib")
    np.testing.assert_array_equal(loaded.transform(archs), enc.transform(archs))


_DATA_FREE_CHECKS = [
    name
    for name in (
        "check_get_params_invariance",
        "check_set_params",
        "check_no_attributes_set_in_init",
        "check_parameters_default_constructible",
        "check_estimator_repr",
        "check_estimator_cloneable",
        "check_do_not_raise_errors_in_init_or_set_params",
        "check_mixin_order",
        "check_valid_tag_types",
        "check_estimator_tags_renamed",
        "check_transformers_unfitted",
    )
    if hasattr(estimator_checks, name)
]


def _lut_frame():
    return pd.DataFrame(
        {"space": "resnet", "unit": 0, "position": ["first", "rest"], "kernel_size": 3,
         "expand_ratio": 0.5, "latency_ms": [1.0, 0.5]}
    )


@pytest.mark.parametrize("check", _DATA_FREE_CHECKS)
@pytest.mark.parametrize(
    "make", [*ENCODERS, lambda: LookupTableEncoder(_lut_frame())], ids=lambda c: getattr(c, "__name__", "LUT")
)
def test_sklearn_data_free_checks(make, check):
    estimator = make()
    getattr(estimator_checks, check)(type(estimator).__name__, estimator)


def test_tags_mark_non_array_input():
    tags = FCCEncoder().__sklearn_tags__()
    assert tags.input_tags.two_d_array is False
    assert tags.input_tags.dict is True


# ------------------------------------------------------------ lookup table
def test_lut_sums_blocks_by_position():
    table = pd.DataFrame(
        [
            (u, pos, k, e, 1.0 + u + (pos == "rest") * 0.5 + k / 100 + e)
            for u in range(4) for pos in ("first", "rest")
            for k in (3, 5, 7) for e in (0.5, 0.6667, 1.0)
        ],
        columns=["unit", "position", "kernel_size", "expand_ratio", "latency_ms"],
    )
    enc = LookupTableEncoder(table).fit([ARCH])
    X = enc.transform([ARCH])
    assert list(enc.get_feature_names_out()) == [f"unit{u}__lut_ms" for u in range(4)]
    expected = [
        sum(
            1.0 + u + (j > 0) * 0.5 + k / 100 + e
            for j, (k, e) in enumerate(zip(ARCH["kernel_size"][u], ARCH["expand_ratio"][u], strict=True))
        )
        for u in range(4)
    ]
    np.testing.assert_allclose(X[0], expected, rtol=1e-6)
    assert table.shape == (72, 5) and enc.table is table  # parameter untouched
    # 0.667 in the table is matched to the choice 0.6667; "other" means "rest".
    alt = table.assign(
        expand_ratio=table["expand_ratio"].replace(0.6667, 0.667),
        position=table["position"].replace("rest", "other"),
    )
    np.testing.assert_allclose(LookupTableEncoder(alt).fit_transform([ARCH]), X)


def test_lut_missing_entry_names_the_block():
    table = _lut_frame()
    arch = json.loads(json.dumps(ARCH))
    with pytest.raises(KeyError, match=r"architecture 0, unit 0, block 1 \(position 'rest'\): kernel_size=5, expand_ratio=1"):
        LookupTableEncoder(table).fit_transform([arch])
    X = LookupTableEncoder(table, missing="nan").fit_transform([arch])
    assert np.isnan(X).all()
    with pytest.raises(ValueError, match="missing must be"):
        LookupTableEncoder(table, missing="zero").fit([arch])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['expand_ratio'\]"):
        LookupTableEncoder(table.drop(columns="expand_ratio")).fit([arch])
    with pytest.raises(ValueError, match="no rows of space 'resnet'"):
        LookupTableEncoder(table.assign(space="mobilenetv3")).fit([arch])
    with pytest.raises(ValueError, match="does not exist"):
        LookupTableEncoder("/nonexistent/lut.csv").fit([arch])


def _densenet_table(grid_max=1216):
    rows = [
        ("densenet", u, "dense_layer", k, c, 0.01 * c + k)
        for u in range(5) for k in (1, 3, 5, 7, 9)
        for c in range(64 if u == 0 else 32, grid_max + 1, 64)  # coarse grid: interpolates
    ]
    rows.append(("densenet", 0, "transition", None, 96, 5.0))
    return pd.DataFrame(
        rows, columns=["space", "unit", "position", "kernel_size", "in_channels", "latency_ms"]
    )


def test_lut_densenet_interpolates_in_channels():
    arch = {"space": "densenet", "depth": [3, 2, 1, 4, 2], "kernel_size": [3, 5, 9, 1, 7]}
    X = LookupTableEncoder(_densenet_table()).fit_transform([arch])
    # Unit inputs: 64, then each transition halves (input + 32 * depth).
    inputs = [64]
    for d in arch["depth"][:-1]:
        inputs.append((inputs[-1] + 32 * d) // 2)
    expected = [
        sum(0.01 * (inputs[u] + 32 * j) + arch["kernel_size"][u] for j in range(arch["depth"][u]))
        for u in range(5)
    ]
    np.testing.assert_allclose(X[0], expected, rtol=1e-5)
    with pytest.raises(KeyError, match=r"unit 0, block 1 \(dense layer\): kernel_size=3, in_channels=96 \(profiled in_channels 64\.\.64\)"):
        LookupTableEncoder(_densenet_table(grid_max=100)).fit_transform([arch])


def test_lut_pickles_and_works_without_the_file(tmp_path):
    path = tmp_path / "lut.csv"
    _lut_frame().to_csv(path, index=False)
    arch = {"space": "resnet", "depth": [2, 1, 1, 1], "kernel_size": [[3, 3], [3], [3], [3]],
            "expand_ratio": [[0.5, 0.5], [0.5], [0.5], [0.5]]}
    enc = LookupTableEncoder(str(path), missing="nan").fit([arch])
    fcc = FCCEncoder().fit([arch])
    joblib.dump((enc, fcc), tmp_path / "enc.joblib")
    path.unlink()
    code = textwrap.dedent(
        f"""
        import json, joblib
        enc, fcc = joblib.load({str(tmp_path / "enc.joblib")!r})
        archs = [json.loads({json.dumps(json.dumps(arch))})]
        print(json.dumps([enc.transform(archs)[0, 0].item(), fcc.transform(archs).sum().item()]))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [1.5, 5.0]


@needs("resnet_b1.csv", "resnet_b1_lut.csv")
def test_lut_h200_resnet_ranks_measured_latency():
    frame = pd.read_csv(H200 / "resnet_b1.csv")
    enc = LookupTableEncoder(H200 / "resnet_b1_lut.csv")
    X = enc.fit_transform(frame["arch"])
    assert X.shape == (len(frame), 4) and np.isfinite(X).all()
    assert kendalltau(X.sum(axis=1), frame["latency_ms"]).statistic > 0.5
    # Bias correction (linear regression on the unit columns) fits at least as well.
    plain = np.mean(np.abs(X.sum(axis=1) - frame["latency_ms"]) / frame["latency_ms"])
    fitted = LinearRegression().fit(X, frame["latency_ms"]).predict(X)
    assert np.mean(np.abs(fitted - frame["latency_ms"]) / frame["latency_ms"]) <= plain + 0.02
    # A table lacking an entry: the error names the block.
    lut = pd.read_csv(H200 / "resnet_b1_lut.csv")
    holed = lut[~((lut.unit == 2) & (lut.position == "rest") & (lut.kernel_size == 7))]
    with pytest.raises(KeyError, match=r"unit 2, block \d+ \(position 'rest'\): kernel_size=7"):
        LookupTableEncoder(holed).fit_transform(frame["arch"])


@needs("densenet_b1.csv", "densenet_b1_lut.csv")
def test_lut_h200_densenet_ranks_measured_latency():
    frame = pd.read_csv(H200 / "densenet_b1.csv")
    X = LookupTableEncoder(H200 / "densenet_b1_lut.csv").fit_transform(frame["arch"])
    assert X.shape == (len(frame), 5) and np.isfinite(X).all()
    assert kendalltau(X.sum(axis=1), frame["latency_ms"]).statistic > 0.5
