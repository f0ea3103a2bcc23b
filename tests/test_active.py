"""Tests of ActiveLatencyEstimator, the train-evaluate-extend loop (ESM Algorithm 1).

Most tests replay a synthetic table whose latency is a known linear function of
the per-unit feature-combination counts (FCC): a ridge regression on FCC fits it
almost exactly, and noise added to chosen depth bins makes exactly those bins
fall under the threshold.
"""

import json
import math
import pickle
import subprocess
import sys

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold

from esm_sklearn import ActiveLatencyEstimator, get_space
from esm_sklearn.active import balanced_extension_counts
from esm_sklearn.predictors import make_latency_pipeline
from esm_sklearn.spaces import arch_key

SPACE = get_space("resnet")
N_BINS = 5


def fast_pipeline(encoding="fcc"):
    return make_latency_pipeline(encoding=encoding, regressor="ridge")


def linear_fcc_latency(archs, seed=0):
    """Latency = bias + sum over blocks of a per-(unit, block combination) cost."""
    rng = np.random.RandomState(seed)
    cost = rng.uniform(0.2, 2.0, size=(SPACE.n_units, len(SPACE.unit_block_combinations)))
    return np.array(
        [
            1.0 + sum(cost[u, c] for u, codes in enumerate(SPACE.block_codes(a)) for c in codes)
            for a in archs
        ]
    )


def make_table(n=600, noisy_bins=(), noise=0.3, seed=0):
    """A balanced pool of distinct archs and its latencies; bins in `noisy_bins` get
    multiplicative noise, so a linear model cannot reach a high accuracy there."""
    archs = SPACE.sample(n, strategy="balanced", n_bins=N_BINS, random_state=seed, unique=True)
    y = linear_fcc_latency(archs, seed)
    rng = np.random.RandomState(seed + 1)
    noisy = np.isin(SPACE.bin_index(archs, N_BINS), list(noisy_bins))
    y[noisy] *= np.exp(rng.normal(0.0, noise, size=noisy.sum()))
    return archs, y


class CountingOracle:
    """Looks latencies up in a dict and records every architecture it measured."""

    def __init__(self, archs, latencies):
        self.table = {arch_key(a): float(v) for a, v in zip(archs, latencies, strict=True)}
        self.calls = []

    def measure(self, archs, space=None, sampling=None):
        keys = [arch_key(a) for a in archs]
        self.calls.append(keys)
        return np.array([self.table[k] for k in keys])


class FormulaOracle:
    """Measures any architecture of the space with the synthetic formula."""

    def __init__(self):
        self.measured = []

    def measure(self, archs, space=None, sampling=None):
        self.measured.extend(arch_key(a) for a in archs)
        return linear_fcc_latency(archs)


def small_estimator(**kw):
    params = dict(
        estimator=fast_pipeline(), n_initial=100, n_step=40, n_test=50, random_state=0
    )
    params.update(kw)
    return ActiveLatencyEstimator(**params)


def bins_of(archs):
    return SPACE.bin_index(archs, N_BINS)


# ------------------------------------------------------------ extension rule
@pytest.mark.parametrize(
    "below, n_step, weights",
    [
        ([True, True, False, False, False], 100, (2, 1)),
        ([True, False, False], 10, (3, 1)),
        ([False, True, False, True], 37, (1.5, 1)),
        ([True] * 5, 100, (2, 1)),
    ],
)
def test_extension_counts_follow_the_ceil_formula(below, n_step, weights):
    w1, w2 = weights
    n_below = sum(below)
    n_norm = w1 * n_below + w2 * (len(below) - n_below)
    expected = [math.ceil(n_step * (w1 if b else w2) / n_norm) for b in below]
    counts = balanced_extension_counts(below, n_step, weights)
    assert counts.tolist() == expected
    assert n_step <= counts.sum() < n_step + len(below)


def test_extension_counts_worked_example():
    # N_norm = 2*2 + 1*3 = 7: ceil(200/7) = 29 and ceil(100/7) = 15.
    assert balanced_extension_counts([1, 1, 0, 0, 0], 100, (2, 1)).tolist() == [29, 29, 15, 15, 15]


@pytest.mark.parametrize("weights", [(1, 0), (-1, 1), (1,), "ab", (np.nan, 1)])
def test_extension_counts_reject_bad_weights(weights):
    with pytest.raises(ValueError, match="weights"):
        balanced_extension_counts([True, False], 10, weights)


def test_loop_extends_by_the_rule_on_the_bins_below_threshold():
    archs, y = make_table(noisy_bins=(0, 1), noise=0.15)
    est = small_estimator(n_step=20, acc_threshold=0.94, max_iter=2).fit(archs, y)
    hist = est.history_
    # The noisy bins are below the threshold, and not every bin is.
    assert {0, 1} <= set(hist.loc[0, "below_bins"]) and len(hist.loc[0, "below_bins"]) < N_BINS
    for i in range(1, len(hist)):
        below = np.isin(np.arange(N_BINS), hist.loc[i - 1, "below_bins"])
        expected = balanced_extension_counts(below, 20, (2, 1))
        added = hist.loc[i, [f"n_added_bin{b}" for b in range(N_BINS)]].to_numpy(dtype=int)
        assert added.tolist() == expected.tolist()
        assert hist.loc[i, "n_requested"] == expected.sum()
    # The draws really landed in those bins.
    per_bin = np.bincount(bins_of(est.X_train_), minlength=N_BINS)
    added_total = hist[[f"n_added_bin{b}" for b in range(N_BINS)]].sum().to_numpy()
    assert per_bin.tolist() == added_total.tolist()


def test_initial_set_is_balanced_over_bins():
    archs, y = make_table()
    est = small_estimator(n_initial=103, max_iter=0, acc_threshold=1.0).fit(archs, y)
    counts = np.bincount(bins_of(est.X_train_), minlength=N_BINS)
    assert counts.tolist() == [21, 21, 21, 20, 20]
    assert np.bincount(bins_of(est.X_test_), minlength=N_BINS).tolist() == [10] * 5


def test_overall_evaluation_splits_an_extension_equally():
    archs, y = make_table(noisy_bins=(0,), noise=0.6)
    est = small_estimator(evaluation="overall", acc_threshold=0.99, max_iter=1, n_step=25)
    est.fit(archs, y)
    assert est.history_.loc[1, [f"n_added_bin{b}" for b in range(N_BINS)]].tolist() == [5] * 5


def test_random_strategy_draws_n_step_per_extension():
    archs, y = make_table(noisy_bins=(0,))
    est = small_estimator(strategy="random", acc_threshold=0.99, max_iter=2, n_step=30)
    est.fit(archs, y)
    assert est.history_["n_added"].tolist() == [100, 30, 30]
    assert len(est.X_train_) == 160


# ------------------------------------------------------------- termination
def test_threshold_reached_at_once_on_a_linear_table():
    archs, y = make_table()
    est = small_estimator(acc_threshold=0.95).fit(archs, y)
    assert est.termination_condition_ == "threshold_reached"
    assert est.n_iter_ == 0
    assert len(est.history_) == 1
    assert len(est.X_train_) == 100
    assert est.history_.loc[0, [f"acc_bin{b}" for b in range(N_BINS)]].min() >= 0.95
    assert est.score(est.X_test_, est.y_test_) >= 0.95


def test_max_iter_stops_the_loop():
    archs, y = make_table(noisy_bins=(2,))
    est = small_estimator(acc_threshold=0.99, max_iter=2).fit(archs, y)
    assert est.termination_condition_ == "max_iter"
    assert est.n_iter_ == 2
    assert est.history_["iteration"].tolist() == [0, 1, 2]
    assert est.history_["n_samples"].iloc[-1] == len(est.X_train_)


def test_max_samples_cuts_the_last_extension_balanced():
    archs, y = make_table(noisy_bins=(0, 1, 2, 3, 4))
    est = small_estimator(
        evaluation="overall", acc_threshold=0.99, n_step=50, max_samples=130, max_iter=10
    ).fit(archs, y)
    assert est.termination_condition_ == "max_samples"
    assert len(est.X_train_) == 130
    assert est.history_.loc[1, [f"n_added_bin{b}" for b in range(N_BINS)]].tolist() == [6] * 5
    assert est.history_.loc[1, "unfilled_bins"] == (0, 1, 2, 3, 4)


def test_pool_exhaustion_ends_the_loop_and_is_reported():
    archs, y = make_table(n=150, noisy_bins=(0, 1, 2, 3, 4))
    est = small_estimator(n_initial=50, n_step=40, n_test=25, acc_threshold=0.999, max_iter=50)
    est.fit(archs, y)
    assert est.termination_condition_ == "pool_exhausted"
    assert len(est.X_train_) + len(est.X_test_) == 150
    assert any(est.history_["unfilled_bins"].map(len) > 0)
    assert est.n_iter_ < 50


# ------------------------------------------------------------ bookkeeping
def test_history_columns():
    archs, y = make_table(noisy_bins=(0,))
    est = small_estimator(max_iter=1, acc_threshold=0.99).fit(archs, y)
    expected = (
        ["iteration", "n_samples", "n_requested", "n_added"]
        + [f"n_added_bin{b}" for b in range(N_BINS)]
        + ["n_failed", "unfilled_bins", "accuracy"]
        + [f"acc_bin{b}" for b in range(N_BINS)]
        + ["score", "score_se", "below_bins", "measure_seconds", "fit_seconds"]
    )
    assert list(est.history_.columns) == expected
    assert (est.history_[["measure_seconds", "fit_seconds"]] >= 0).all().all()
    assert est.bin_edges_.tolist() == SPACE.bin_edges(N_BINS).tolist()
    assert est.space_ == SPACE


def test_no_architecture_is_measured_twice_and_test_is_disjoint():
    archs, y = make_table(n=300, noisy_bins=(0, 1, 2, 3, 4))
    oracle = CountingOracle(archs, y)
    est = small_estimator(oracle=oracle, acc_threshold=0.999, max_iter=3).fit(archs)
    measured = [k for call in oracle.calls for k in call]
    assert len(measured) == len(set(measured))
    assert len(oracle.calls) == 1 + len(est.history_)  # test set, then one call per round
    train = {arch_key(a) for a in est.X_train_}
    test = {arch_key(a) for a in est.X_test_}
    assert not train & test
    assert train | test == set(measured)


def test_failed_measurements_are_counted_not_trained_on():
    archs, y = make_table(n=200)
    y[::7] = np.nan
    est = small_estimator(n_initial=100, n_step=100, n_test=50, acc_threshold=0.999, max_iter=5)
    est.fit(archs, y)
    failed = {arch_key(a) for a, v in zip(archs, y, strict=True) if np.isnan(v)}
    assert est.termination_condition_ == "pool_exhausted"  # so every arch was drawn
    assert est.n_failed_ == len(failed) == len(est.X_failed_)
    assert {arch_key(a) for a in est.X_failed_} == failed
    assert not failed & {arch_key(a) for a in est.X_train_ + est.X_test_}
    assert np.isfinite(est.y_train_).all()
    n_failed_test = 50 - len(est.X_test_)
    assert est.history_["n_failed"].sum() + n_failed_test == est.n_failed_


def test_sampling_from_the_space_with_an_oracle():
    oracle = FormulaOracle()
    est = ActiveLatencyEstimator(
        fast_pipeline(), oracle=oracle, space="resnet", n_initial=50, n_step=20, n_test=25,
        acc_threshold=0.999, max_iter=1, random_state=0,
    ).fit()
    assert len(oracle.measured) == len(set(oracle.measured)) == 25 + len(est.X_train_)
    assert est.history_.loc[0, [f"n_added_bin{b}" for b in range(N_BINS)]].tolist() == [10] * 5
    assert np.bincount(bins_of(est.X_test_), minlength=N_BINS).tolist() == [5] * 5


def test_sample_in_bin_stays_in_its_bin_and_skips_excluded():
    first = SPACE.sample_in_bin(3, 20, N_BINS, random_state=0)
    assert len(first) == 20 and set(bins_of(first)) == {3}
    again = SPACE.sample_in_bin(3, 20, N_BINS, random_state=0, exclude=first)
    assert len(again) == 20 and set(bins_of(again)) == {3}
    assert not {arch_key(a) for a in first} & {arch_key(a) for a in again}
    with pytest.raises(ValueError, match="bin"):
        SPACE.sample_in_bin(5, 1, N_BINS)


def test_cross_validation_evaluation():
    archs, y = make_table(noisy_bins=(0,))
    est = small_estimator(test="cv", cv=3, acc_threshold=0.99, max_iter=1).fit(archs, y)
    assert est.X_test_ is None and est.y_test_ is None
    assert est.history_.loc[0, "acc_bin0"] < est.history_.loc[0, "acc_bin4"]
    assert len(est.X_train_) == est.history_["n_samples"].iloc[-1]


def test_seeded_runs_repeat_exactly():
    archs, y = make_table(noisy_bins=(1,))
    runs = [small_estimator(acc_threshold=0.99, max_iter=2, random_state=7).fit(archs, y) for _ in "ab"]
    assert [arch_key(a) for a in runs[0].X_train_] == [arch_key(a) for a in runs[1].X_train_]
    cols = [c for c in runs[0].history_.columns if not c.endswith("_seconds")]
    assert runs[0].history_[cols].equals(runs[1].history_[cols])
    other = small_estimator(acc_threshold=0.99, max_iter=2, random_state=8).fit(archs, y)
    assert [arch_key(a) for a in other.X_train_] != [arch_key(a) for a in runs[0].X_train_]


@pytest.mark.parametrize(
    "params, match",
    [
        ({"strategy": "greedy"}, "strategy"),
        ({"evaluation": "bins"}, "evaluation"),
        ({"test": "split"}, "test"),
        ({"acc_threshold": 95}, "acc_threshold"),
        ({"weights": (1, 0)}, "weights"),
        ({"n_initial": 0}, "n_initial"),
        ({"max_samples": 0}, "max_samples"),
        ({"oracle": object()}, "measure"),
    ],
)
def test_bad_parameters_raise_at_fit(params, match):
    archs, y = make_table(n=100)
    est = small_estimator(**params)
    with pytest.raises(ValueError, match=match):
        est.fit(archs, None if "oracle" in params else y)


def test_bad_inputs_raise():
    archs, y = make_table(n=100)
    with pytest.raises(ValueError, match="y"):
        small_estimator().fit(archs, y[:-1])
    with pytest.raises(ValueError, match="oracle"):
        small_estimator(oracle=CountingOracle(archs, y)).fit(archs, y)
    with pytest.raises(ValueError, match="without X"):
        small_estimator(space="resnet").fit(None, y)
    with pytest.raises(ValueError, match="space"):
        small_estimator().fit()
    bad = dict(archs[0], depth=[9, 1, 1, 1])
    with pytest.raises(ValueError, match=r"X\[0\]"):
        small_estimator().fit([bad] + archs[1:], y)


# ------------------------------------------------- scikit-learn citizenship
def test_grid_search_in_replay_mode():
    archs, y = make_table(n=400, noisy_bins=(0,))
    grid = GridSearchCV(
        small_estimator(n_initial=60, n_step=30, n_test=30, max_iter=1, acc_threshold=0.99),
        {"strategy": ["random", "balanced"], "estimator": [fast_pipeline("fcc"), fast_pipeline("fc")]},
        cv=KFold(2, shuffle=True, random_state=0),
    )
    grid.fit(archs, y)
    scores = grid.cv_results_["mean_test_score"]
    assert len(scores) == 4 and np.isfinite(scores).all()
    assert isinstance(grid.best_estimator_, ActiveLatencyEstimator)
    assert grid.best_estimator_.predict(archs[:5]).shape == (5,)


def test_clone_and_nested_params():
    est = small_estimator(weights=(3, 1))
    params = est.get_params()
    assert "estimator__regressor__alpha" in params
    assert "estimator__encoder" in params
    est.set_params(estimator__regressor__alpha=0.5, strategy="random")
    twin = clone(est)
    assert twin.get_params()["estimator__regressor__alpha"] == 0.5
    assert twin.strategy == "random" and twin.weights == (3, 1)
    assert twin.estimator is not est.estimator
    assert not hasattr(twin, "estimator_")


def test_fitted_estimator_keeps_no_oracle_and_predicts_in_a_fresh_process(tmp_path):
    archs, y = make_table(n=300)
    est = small_estimator().fit(archs, y)
    assert est.oracle is None
    assert not any("Oracle" in type(v).__name__ for v in vars(est).values())
    path = tmp_path / "predictor.joblib"
    joblib.dump(est, path)
    queries = archs[:10]
    code = (
        "import json, sys, joblib\n"
        f"est = joblib.load({str(path)!r})\n"
        "archs = json.loads(sys.stdin.read())\n"
        "print(json.dumps(est.predict(archs).tolist()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(queries), capture_output=True,
        text=True, check=True, timeout=120,
    )
    np.testing.assert_allclose(json.loads(out.stdout), est.predict(queries), rtol=1e-6)


def test_device_oracle_with_a_store_resumes_without_remeasuring(tmp_path):
    pytest.importorskip("torch")
    from esm_sklearn import TorchLatencyOracle
    from esm_sklearn.store import MeasurementStore

    store = tmp_path / "cpu.sqlite"

    def run():
        return ActiveLatencyEstimator(
            fast_pipeline(), space="mobilenetv3",
            oracle=TorchLatencyOracle(device="cpu", store=str(store), resolution=32, warmup=0,
                                      runs=1, n_references=0),
            n_initial=3, n_test=2, max_iter=0, random_state=3,
        ).fit()

    first = run()
    with MeasurementStore(store) as s:
        n_rows = len(s)
    assert n_rows == 5
    second = run()
    with MeasurementStore(store) as s:
        assert len(s) == n_rows  # every arch came back from the store
    assert [arch_key(a) for a in second.X_train_] == [arch_key(a) for a in first.X_train_]
    np.testing.assert_array_equal(second.y_train_, first.y_train_)
    assert second.termination_condition_ == "max_iter"


# ----------------------------------------------- sizes, plateau, oracle params
def test_auto_sizes_scale_to_a_small_pool_and_explicit_ones_warn():
    archs, y = make_table(n=130)
    est = ActiveLatencyEstimator(fast_pipeline(), acc_threshold=0.9, random_state=0).fit(archs, y)
    assert (est.n_test_, est.n_initial_, est.n_step_) == (26, 52, 13)
    assert len(est.X_test_) == 26 and est.history_["n_samples"].iloc[0] == 52
    with pytest.warns(UserWarning, match="pool holds 130"):
        ActiveLatencyEstimator(fast_pipeline(), n_test=100, n_initial=100, max_iter=0,
                               random_state=0).fit(archs, y)


def test_auto_sizes_without_a_pool_are_the_papers():
    est = ActiveLatencyEstimator(fast_pipeline(), space="resnet", oracle=FormulaOracle(),
                                 max_iter=0, random_state=0).fit()
    assert (est.n_test_, est.n_initial_, est.n_step_) == (200, 300, 100)


@pytest.mark.parametrize("name, value", [("n_initial", "many"), ("n_step", True), ("n_test", 0)])
def test_sizes_must_be_auto_or_positive_ints(name, value):
    archs, y = make_table(n=100)
    with pytest.raises(ValueError, match=f"{name} must be 'auto' or an int >= 1, got"):
        small_estimator(**{name: value}).fit(archs, y)


def test_plateau_stops_the_loop_when_more_data_no_longer_helps():
    # Bin 0 is pure noise: no amount of data lifts it to 0.99, so the loop must stop
    # on its own long before max_iter instead of measuring the whole pool.
    archs, y = make_table(n=1500, noisy_bins=(0,), noise=0.3)
    est = small_estimator(n_initial=100, n_step=50, n_test=100, acc_threshold=0.99,
                          max_iter=40, plateau_patience=3).fit(archs, y)
    assert est.termination_condition_ == "plateau"
    assert est.n_iter_ < 40
    scores = est.history_["score"].to_numpy()
    assert est.plateau_score_ == pytest.approx(scores.max())
    best_before = scores[:-3].max()
    se = est.history_["score_se"].to_numpy()[int(np.argmax(scores[:-3]))]
    assert scores[-3:].max() <= best_before + se
    never = small_estimator(n_initial=100, n_step=50, n_test=100, acc_threshold=0.99,
                            max_iter=6, plateau_patience=None).fit(archs, y)
    assert never.termination_condition_ == "max_iter" and never.plateau_score_ is None


def test_oracle_settings_are_nested_parameters():
    from esm_sklearn import TorchLatencyOracle

    est = ActiveLatencyEstimator(oracle=TorchLatencyOracle(runs=20), space="resnet")
    assert est.get_params()["oracle__runs"] == 20
    est.set_params(oracle__runs=7, oracle__warmup=2)
    assert est.oracle.runs == 7 and est.oracle.warmup == 2
    twin = clone(est)
    assert twin.oracle is not est.oracle and twin.oracle.runs == 7
    for removed in ("device", "store", "oracle_params"):
        assert removed not in est.get_params()


@pytest.mark.parametrize("bad", [1e300, 1e-300, "fast"])
def test_implausible_latencies_are_refused_with_their_index(bad):
    archs, y = make_table(n=100)
    y = y.astype(object)
    y[7] = bad
    with pytest.raises(ValueError, match=r"y\[7\]|numeric"):
        small_estimator().fit(archs, y)


def test_fitted_loop_records_its_setting_and_scores_distance_to_its_data():
    archs, y = make_table(n=400)
    est = small_estimator(acc_threshold=0.5).fit(archs, y)
    setting = est.setting_
    assert setting["space"] == "resnet" and "replay" in setting["source"]
    assert sum(setting["rows_per_bin"]) == len(est.X_train_)
    corner = {"space": "resnet", "depth": [7] * 4, "kernel_size": [[7] * 7] * 4,
              "expand_ratio": [[1.0] * 7] * 4}
    scores = est.ood_.ood_score([corner, *est.X_test_])
    assert scores[0] > np.median(scores[1:]) and est.ood_.is_ood([corner])[0]
    loaded = pickle.loads(pickle.dumps(est))
    assert loaded.setting_ == setting
    np.testing.assert_allclose(loaded.ood_.ood_score([corner]), scores[:1])
