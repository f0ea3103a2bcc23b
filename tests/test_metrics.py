import pickle

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_percentage_error
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score, cross_validate

from esm_sklearn import get_space
from esm_sklearn.datasets import load_bundled
from esm_sklearn.metrics import (
    SCORERS,
    binwise_accuracy,
    get_scorer,
    kendall_tau,
    kendall_tau_scorer,
    latency_accuracy,
    latency_accuracy_scorer,
    make_worst_bin_scorer,
    neg_rmse_scorer,
    rmse,
    within_10_scorer,
    within_accuracy,
    worst_bin_accuracy,
    worst_bin_scorer,
)


class TotalDepthRegressor(RegressorMixin, BaseEstimator):
    """Test helper: linear regression on the total depth of each architecture."""

    def __init__(self, fit_intercept=True):
        self.fit_intercept = fit_intercept

    @staticmethod
    def _features(X):
        return np.array([[sum(arch["depth"])] for arch in X], dtype=float)

    def fit(self, X, y):
        self.model_ = LinearRegression(fit_intercept=self.fit_intercept).fit(self._features(X), y)
        return self

    def predict(self, X):
        return self.model_.predict(self._features(X))


@pytest.fixture(scope="module")
def resnet_b32():
    return load_bundled("h200_resnet_b32")


def _densenet(depth_per_unit):
    return {"space": "densenet", "depth": [depth_per_unit] * 5, "kernel_size": [3] * 5}


# --------------------------------------------------------------- point metrics
def test_latency_accuracy_is_one_minus_mape_on_a_hand_example():
    # |1.1-1|/1 = 0.1 and |1.8-2|/2 = 0.1 -> MAPE 0.1
    assert latency_accuracy([1.0, 2.0], [1.1, 1.8]) == pytest.approx(1 - 0.1)
    assert latency_accuracy([4.0], [4.0]) == 1.0


def test_latency_accuracy_matches_sklearn_mape():
    rng = np.random.RandomState(0)
    y = rng.uniform(1, 10, 50)
    p = y * rng.uniform(0.7, 1.3, 50)
    assert latency_accuracy(y, p) == pytest.approx(1 - mean_absolute_percentage_error(y, p))


def test_predictions_of_shape_n_by_1_are_accepted():
    assert latency_accuracy([1.0, 2.0], np.array([[1.1], [1.8]])) == pytest.approx(0.9)


def test_within_accuracy_counts_relative_errors_up_to_tol():
    y = [1.0, 2.0, 4.0, 10.0]
    p = [1.1, 2.5, 3.9, 10.0]  # relative errors 0.1 (boundary), 0.25, 0.025, 0
    assert within_accuracy(y, p) == pytest.approx(3 / 4)
    assert within_accuracy(y, p, tol=0.3) == 1.0
    assert within_accuracy(y, p, tol=0.0) == pytest.approx(1 / 4)


def test_rmse_on_a_hand_example():
    assert rmse([1.0, 2.0], [1.0, 4.0]) == pytest.approx(np.sqrt((0 + 2.0**2) / 2))


def test_kendall_tau_sign_follows_ranking():
    y = [1.0, 2.0, 3.0, 4.0]
    assert kendall_tau(y, [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau(y, [40, 30, 20, 10]) == pytest.approx(-1.0)
    # [1,2,3] vs [1,3,2]: pairs (1,2) and (1,3) concordant, (2,3) discordant
    assert kendall_tau([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == pytest.approx((2 - 1) / 3)


def test_kendall_tau_is_nan_when_undefined():
    assert np.isnan(kendall_tau([1.0], [2.0]))
    assert np.isnan(kendall_tau([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))


@pytest.mark.parametrize(
    "y_true, y_pred, match",
    [
        ([1.0, 2.0], [1.0], "differ in length"),
        ([1.0, np.nan], [1.0, 2.0], "y_true holds 1 non-finite"),
        ([1.0, 2.0], [1.0, np.inf], "y_pred holds 1 non-finite"),
        ([1.0, 0.0], [1.0, 2.0], "y_true must be > 0.*index 1"),
        ([1.0, -2.0], [1.0, 2.0], "y_true must be > 0"),
        ([], [], "empty"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "1-D"),
        (["a", "b"], [1.0, 2.0], "numeric"),
    ],
)
def test_bad_targets_raise_value_error(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        latency_accuracy(y_true, y_pred)


def test_rmse_and_kendall_accept_non_positive_targets_but_check_lengths():
    assert rmse([0.0, -1.0], [0.0, -1.0]) == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        kendall_tau([1.0, 2.0], [1.0])


@pytest.mark.parametrize("tol", [-0.1, np.nan, "0.1", True])
def test_within_accuracy_rejects_bad_tol(tol):
    with pytest.raises(ValueError, match="tol"):
        within_accuracy([1.0], [1.0], tol=tol)


# -------------------------------------------------------------------- bin-wise
def test_binwise_hand_example_and_empty_bins():
    # DenseNet totals 5..100 in 5 bins: [5,23], [24,42], [43,61], [62,80], [81,100]
    archs = [_densenet(1), _densenet(2), _densenet(20), _densenet(20)]  # totals 5, 10, 100, 100
    y = [1.0, 2.0, 10.0, 20.0]
    p = [1.0, 2.0, 11.0, 18.0]  # bin 0 exact; bin 4 errors 0.1 and 0.1
    table = binwise_accuracy(y, p, archs)
    assert table["bin"].tolist() == [0, 1, 2, 3, 4]
    assert table["depth_low"].tolist() == [5, 24, 43, 62, 81]
    assert table["depth_high"].tolist() == [23, 42, 61, 80, 100]
    assert table["count"].tolist() == [2, 0, 0, 0, 2]
    assert table.loc[0, "accuracy"] == pytest.approx(1.0)
    assert table.loc[4, "accuracy"] == pytest.approx(0.9)
    assert table.loc[[1, 2, 3], "accuracy"].isna().all()
    assert table.loc[[1, 2, 3], "within_10"].isna().all()
    assert table.loc[4, "within_10"] == 1.0
    assert worst_bin_accuracy(y, p, archs) == pytest.approx(0.9)


def test_binwise_table_on_a_real_table(resnet_b32):
    space = get_space("resnet")
    archs, y = resnet_b32.data, resnet_b32.target
    p = y * np.random.RandomState(0).uniform(0.8, 1.2, len(y))
    table = binwise_accuracy(y, p, archs, n_bins=4)
    assert len(table) == 4
    assert table["count"].sum() == len(y)
    bins = space.bin_index(archs, 4)
    assert table["count"].tolist() == np.bincount(bins, minlength=4).tolist()
    # The ranges tile min..max depth and hold each architecture's total depth.
    assert table["depth_low"].iloc[0] == space.min_depth
    assert table["depth_high"].iloc[-1] == space.max_depth
    assert (table["depth_low"].iloc[1:].to_numpy() == table["depth_high"].iloc[:-1].to_numpy() + 1).all()
    totals = space.total_depth(archs)
    assert (totals >= table["depth_low"].to_numpy()[bins]).all()
    assert (totals <= table["depth_high"].to_numpy()[bins]).all()
    for b in range(4):
        mask = bins == b
        if mask.any():
            assert table.loc[b, "accuracy"] == pytest.approx(latency_accuracy(y[mask], p[mask]))
            assert table.loc[b, "within_10"] == pytest.approx(within_accuracy(y[mask], p[mask]))
    non_empty = table.loc[table["count"] > 0, "accuracy"]
    assert worst_bin_accuracy(y, p, archs, n_bins=4) == pytest.approx(non_empty.min())
    # An explicit space, JSON strings and another metric give consistent results.
    explicit = binwise_accuracy(y, p, resnet_b32.frame["arch"], space="resnet", n_bins=4, metric=rmse)
    assert explicit["count"].tolist() == table["count"].tolist()
    assert explicit.loc[0, "accuracy"] == pytest.approx(rmse(y[bins == 0], p[bins == 0]))


def test_binwise_errors_name_the_problem():
    archs = [_densenet(1), _densenet(2)]
    with pytest.raises(ValueError, match="2 architectures for 3 latencies"):
        binwise_accuracy([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], archs)
    mixed = [_densenet(1), {"space": "resnet", "depth": [1] * 4}]
    with pytest.raises(ValueError, match="several spaces"):
        binwise_accuracy([1.0, 2.0], [1.0, 2.0], mixed)
    with pytest.raises(ValueError, match="no 'space' field"):
        binwise_accuracy([1.0], [1.0], [{"depth": [1] * 5}])
    with pytest.raises(ValueError, match="architecture 0 is of space 'densenet', not 'resnet'"):
        binwise_accuracy([1.0], [1.0], [_densenet(1)], space="resnet")
    # A total depth outside the space is reported by SearchSpace.bin_index.
    with pytest.raises(ValueError, match="total depth 100 outside 4..28"):
        binwise_accuracy([1.0], [1.0], [{"depth": [20] * 5}], space="resnet")


# --------------------------------------------------------------------- scorers
def test_scorers_match_their_metrics(resnet_b32):
    X, y = resnet_b32.data, resnet_b32.target
    est = TotalDepthRegressor().fit(X, y)
    p = est.predict(X)
    assert latency_accuracy_scorer(est, X, y) == pytest.approx(latency_accuracy(y, p))
    assert within_10_scorer(est, X, y) == pytest.approx(within_accuracy(y, p, 0.1))
    assert kendall_tau_scorer(est, X, y) == pytest.approx(kendall_tau(y, p))
    assert neg_rmse_scorer(est, X, y) == pytest.approx(-rmse(y, p))
    assert worst_bin_scorer(est, X, y) == pytest.approx(worst_bin_accuracy(y, p, X))
    three = make_worst_bin_scorer(n_bins=3, space="resnet")
    assert three(est, X, y) == pytest.approx(worst_bin_accuracy(y, p, X, n_bins=3))
    # The worst bin is never better than the overall accuracy's best bin.
    assert worst_bin_scorer(est, X, y) <= binwise_accuracy(y, p, X)["accuracy"].max()


def test_scorers_work_in_cross_validate_with_a_dict_of_callables(resnet_b32):
    X, y = resnet_b32.data, resnet_b32.target
    cv = KFold(3, shuffle=True, random_state=0)
    result = cross_validate(TotalDepthRegressor(), X, y, cv=cv, scoring=dict(SCORERS))
    for name in SCORERS:
        assert np.isfinite(result[f"test_{name}"]).all()
    assert (result["test_neg_rmse"] < 0).all()
    # Recompute the first fold by hand.
    train, test = next(cv.split(X))
    est = TotalDepthRegressor().fit([X[i] for i in train], y[train])
    X_test = [X[i] for i in test]
    p = est.predict(X_test)
    assert result["test_worst_bin"][0] == pytest.approx(worst_bin_accuracy(y[test], p, X_test))
    assert result["test_latency_accuracy"][0] == pytest.approx(latency_accuracy(y[test], p))


def test_scorers_work_in_cross_val_score_and_grid_search(resnet_b32):
    X, y = resnet_b32.data, resnet_b32.target
    scores = cross_val_score(TotalDepthRegressor(), X, y, cv=3, scoring=get_scorer("worst_bin"))
    assert scores.shape == (3,) and np.isfinite(scores).all()
    search = GridSearchCV(
        TotalDepthRegressor(),
        {"fit_intercept": [True, False]},
        cv=3,
        scoring={"worst_bin": worst_bin_scorer, "tau": get_scorer("kendall_tau")},
        refit="worst_bin",
    ).fit(X, y)
    means = search.cv_results_["mean_test_worst_bin"]
    assert search.best_score_ == pytest.approx(means.max())
    assert search.best_params_ == {"fit_intercept": [True, False][int(np.argmax(means))]}


def test_worst_bin_scorer_needs_architectures_as_x(resnet_b32):
    est = TotalDepthRegressor().fit(resnet_b32.data, resnet_b32.target)
    with pytest.raises(ValueError, match="architecture"):
        worst_bin_scorer(est, np.ones((3, 2)), np.ones(3))


def test_get_scorer_names_and_errors():
    assert get_scorer("latency_accuracy") is latency_accuracy_scorer
    assert get_scorer(worst_bin_scorer) is worst_bin_scorer
    assert callable(get_scorer("r2"))  # scikit-learn's names still work
    with pytest.raises(ValueError, match="unknown scorer 'nope'.*worst_bin"):
        get_scorer("nope")
    with pytest.raises(ValueError, match="n_bins"):
        make_worst_bin_scorer(n_bins=0)
    with pytest.raises(ValueError, match="unknown search space"):
        make_worst_bin_scorer(space="nope")


def test_scorers_pickle(resnet_b32):
    X, y = resnet_b32.data[:40], resnet_b32.target[:40]
    est = TotalDepthRegressor().fit(X, y)
    for scorer in (*SCORERS.values(), make_worst_bin_scorer(n_bins=2, space="resnet")):
        restored = pickle.loads(pickle.dumps(scorer))
        assert restored(est, X, y) == pytest.approx(scorer(est, X, y))
