"""Tests of ConformalLatencyRegressor: MAPIE bounds around latency predictors.

Synthetic task: latency linear in the FCC counts times log-normal noise (the
multiplicative error of real timings), so a ridge regression on FCC is a fast,
good point predictor and the bounds must cover the noise.
"""

import subprocess
import sys
import warnings

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from esm_sklearn import get_space
from esm_sklearn.conformal import ConformalLatencyRegressor
from esm_sklearn.encoders import FCCEncoder
from esm_sklearn.transfer import TransferLatencyRegressor

SPACE = get_space("resnet")


def ridge():
    return make_pipeline(FCCEncoder(), Ridge(alpha=1e-2))


@pytest.fixture(scope="module")
def task():
    archs = SPACE.sample(700, random_state=0)
    F = FCCEncoder(space=SPACE).fit_transform(archs)
    clean = 1.0 + F @ np.random.default_rng(1).uniform(0.05, 1.0, F.shape[1])
    y = clean * np.random.default_rng(2).lognormal(0.0, 0.08, len(archs))
    return archs, y, clean


def coverage(bounds, y):
    return float(np.mean((bounds[:, 0] <= y) & (y <= bounds[:, 1])))


@pytest.mark.parametrize("method", ["cross", "split"])
def test_bounds_cover_about_the_confidence_level(task, method):
    archs, y, _ = task
    model = ConformalLatencyRegressor(ridge(), 0.9, method=method, random_state=0)
    bounds = model.fit(archs[:300], y[:300]).predict_interval(archs[300:])
    assert bounds.shape == (400, 2)
    assert 0.86 <= coverage(bounds, y[300:]) <= 0.95


@pytest.mark.parametrize("method", ["cross", "split"])
def test_bounds_are_ordered_around_the_prediction(task, method):
    archs, y, _ = task
    model = ConformalLatencyRegressor(ridge(), 0.9, method=method, random_state=0)
    model.fit(archs[:300], y[:300])
    pred, bounds = model.predict(archs[300:]), model.predict_interval(archs[300:])
    assert np.all((bounds[:, 0] <= pred) & (pred <= bounds[:, 1]))


@pytest.mark.parametrize("score", ["log", "gamma"])
def test_relative_scores_give_bounds_proportional_to_the_prediction(task, score):
    archs, y, _ = task
    model = ConformalLatencyRegressor(ridge(), 0.9, method="split", conformity_score=score,
                                      random_state=0)
    model.fit(archs[:300], y[:300])
    pred, bounds = model.predict(archs[300:]), model.predict_interval(archs[300:])
    for column in (0, 1):
        ratio = bounds[:, column] / pred
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)


def test_absolute_score_gives_constant_width(task):
    archs, y, _ = task
    model = ConformalLatencyRegressor(ridge(), 0.9, method="split", conformity_score="absolute",
                                      random_state=0)
    bounds = model.fit(archs[:300], y[:300]).predict_interval(archs[300:])
    width = bounds[:, 1] - bounds[:, 0]
    np.testing.assert_allclose(width[bounds[:, 0] > 0], width[0], rtol=1e-6)


def test_a_higher_level_gives_wider_bounds(task):
    archs, y, _ = task
    widths = []
    for level in (0.5, 0.9):
        bounds = ConformalLatencyRegressor(ridge(), level, random_state=0).fit(
            archs[:200], y[:200]).predict_interval(archs[300:])
        widths.append(np.mean(bounds[:, 1] - bounds[:, 0]))
    assert widths[0] < widths[1]


def test_wraps_the_transfer_model_from_ten_samples(task):
    archs, y, clean = task
    source = ridge().fit(archs[400:], clean[400:] * 3.0)  # another device, 3x slower
    model = ConformalLatencyRegressor(TransferLatencyRegressor([source]), 0.9, random_state=0)
    bounds = model.fit(archs[:10], y[:10]).predict_interval(archs[10:400])
    assert bounds.shape == (390, 2) and np.all(np.isfinite(bounds))
    assert coverage(bounds, y[10:400]) >= 0.75
    assert all(est.estimator_.sources[0] is source
               for est in model.mapie_._mapie_regressor.estimator_.estimators_)


def test_default_pipeline_is_used_when_no_estimator(task):
    archs, y, _ = task
    model = ConformalLatencyRegressor(None, 0.9, method="split", random_state=0).fit(archs[:30], y[:30])
    fitted = model.mapie_._mapie_regressor.estimator_.single_estimator_.estimator_
    assert type(fitted[-1]).__name__ == "MLPLatencyRegressor"
    assert model.predict_interval(archs[:3]).shape == (3, 2)


def test_tiny_training_sets(task):
    archs, y, _ = task
    with pytest.raises(ValueError, match="at least 2 samples, got 1"):
        ConformalLatencyRegressor(ridge()).fit(archs[:1], y[:1])
    with pytest.raises(ValueError, match="conformalizes on 3 of the 10 samples.*at least 9"):
        ConformalLatencyRegressor(ridge(), method="split").fit(archs[:10], y[:10])
    # 9 samples are enough for 90% CV+ bounds with the (symmetric) log score
    bounds = ConformalLatencyRegressor(ridge(), 0.9, random_state=0).fit(
        archs[:9], y[:9]).predict_interval(archs[9:12])
    assert np.all(np.isfinite(bounds))
    # 3 samples cannot support 90% bounds: the upper bound is infinite, not made up
    for score in ("log", "absolute"):
        bounds = ConformalLatencyRegressor(ridge(), 0.9, cv=3, conformity_score=score,
                                           random_state=0).fit(archs[:3], y[:3]).predict_interval(archs[3:6])
        assert bounds.shape == (3, 2) and np.all(np.isinf(bounds[:, 1])) and np.all(bounds[:, 0] >= 0)


def test_clone_and_grid_search(task):
    archs, y, _ = task
    est = ConformalLatencyRegressor(ridge(), 0.8, cv=3, random_state=0)
    copy = clone(est)
    assert copy.get_params()["confidence_level"] == 0.8 and copy.estimator is not est.estimator
    search = GridSearchCV(est, {"estimator__ridge__alpha": [1e-2, 1e2]}, cv=3).fit(archs[:90], y[:90])
    assert search.best_params_["estimator__ridge__alpha"] == 1e-2
    assert search.best_estimator_.predict_interval(archs[:2]).shape == (2, 2)


def test_pickle_then_predict_interval_in_a_fresh_process(task, tmp_path):
    archs, y, _ = task
    model = ConformalLatencyRegressor(ridge(), 0.9, random_state=0).fit(archs[:100], y[:100])
    path = tmp_path / "conformal.joblib"
    joblib.dump((model, archs[100:110]), path)
    code = (
        "import joblib, sys, numpy as np\n"
        f"model, X = joblib.load({str(path)!r})\n"
        "np.save(sys.argv[1], model.predict_interval(X))\n"
    )
    out = tmp_path / "bounds.npy"
    subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(out)], check=True)
    np.testing.assert_allclose(np.load(out), model.predict_interval(archs[100:110]))


@pytest.mark.parametrize(
    ("params", "match"),
    [({"confidence_level": 1.0}, "confidence_level must be"), ({"method": "jackknife"}, "method must be"),
     ({"conformity_score": "relative"}, "conformity_score must be"), ({"cv": 1}, "cv must be"),
     ({"calibration_size": 0.0}, "calibration_size must be")],
)
def test_bad_parameters(task, params, match):
    archs, y, _ = task
    with pytest.raises(ValueError, match=match):
        ConformalLatencyRegressor(ridge(), **params).fit(archs[:20], y[:20])


def test_bad_latencies_are_named(task):
    archs, y, _ = task
    bad = y[:20].copy()
    bad[7] = -1.0
    with pytest.raises(ValueError, match=r"y\[7\] = -1.0"):
        ConformalLatencyRegressor(ridge()).fit(archs[:20], bad)


def test_nas_budget_example_runs_at_small_size(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "nas_budget.py"
    spec = importlib.util.spec_from_file_location("nas_budget_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    budget = module.main(["--n", "60", "--n-train", "30", "--epochs", "2"])
    out = capsys.readouterr().out
    assert budget > 0 and "upper bound <= budget" in out and "violators kept" in out


class _SometimesNegative(Ridge):
    """A linear model whose predictions go below zero for part of the data."""

    def predict(self, X):
        pred = super().predict(X)
        return np.where(np.arange(len(pred)) % 4 == 0, -pred, pred)


def test_non_positive_predictions_widen_the_bounds_instead_of_failing(task):
    # The log score must not turn a prediction <= 0 into NaN: MAPIE then drops
    # points or averages empty slices (this made GridSearchCV fail for some seeds).
    archs, y, _ = task
    model = make_pipeline(FCCEncoder(), _SometimesNegative(alpha=1e-2))
    est = ConformalLatencyRegressor(model, 0.8, cv=3, random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bounds = est.fit(archs[:60], y[:60]).predict_interval(archs[60:90])
    assert np.isfinite(bounds).all() and (bounds[:, 0] <= bounds[:, 1]).all()
