"""Tests of TransferLatencyRegressor: a new device from few samples and frozen source predictors.

The synthetic devices are linear in the feature-combination counts (FCC), so a
ridge regression on FCC is a near-exact, fast source predictor; the target is a
log-linear mix of two source devices (what the log-space stack can represent).
"""

import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from conftest import toy_space
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from esm_sklearn import ActiveLatencyEstimator, get_space
from esm_sklearn.encoders import FCCEncoder
from esm_sklearn.transfer import TransferLatencyRegressor, source_space

SHARED_HELP = Path(__file__).resolve().parents[2] / "shared" / "external" / "help"
SPACE = get_space("mobilenetv3")


def device_latency(archs, seed):
    F = FCCEncoder(space=SPACE).fit_transform(archs)
    cost = np.random.default_rng(seed).uniform(0.05, 1.0, F.shape[1])
    return 1.0 + F @ cost


def ridge_source(archs, y):
    return make_pipeline(FCCEncoder(), Ridge(alpha=1e-3)).fit(archs, y)


@pytest.fixture(scope="module")
def task():
    archs = SPACE.sample(400, random_state=0)
    ya, yb = device_latency(archs, 1), device_latency(archs, 2)
    sources = [ridge_source(archs[:300], ya[:300]), ridge_source(archs[:300], yb[:300])]
    y = 1.5 * ya**0.7 * yb**0.3  # the new device
    return archs, y, sources


def mape(pred, y):
    return float(np.mean(np.abs(pred / y - 1)))


def test_ten_samples_recover_a_mix_of_sources(task):
    archs, y, sources = task
    model = TransferLatencyRegressor(sources).fit(archs[:10], y[:10])
    assert model.mode_ == "stack"
    assert np.all(model.coef_ >= 0)
    assert mape(model.predict(archs[300:]), y[300:]) < 0.03


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_training_sets_give_positive_ranked_predictions(task, n):
    archs, y, sources = task
    model = TransferLatencyRegressor(sources).fit(archs[:n], y[:n])
    pred = model.predict(archs[300:])
    assert pred.shape == (100,) and np.all(np.isfinite(pred)) and np.all(pred > 0)
    # even one sample ranks like the sources (their geometric mean, rescaled)
    assert spearmanr(pred, y[300:])[0] > 0.9


def test_one_sample_is_the_rescaled_geometric_mean_of_the_sources(task):
    archs, y, sources = task
    model = TransferLatencyRegressor(sources).fit(archs[:1], y[:1])
    geo = np.sqrt(sources[0].predict(archs[300:]) * sources[1].predict(archs[300:]))
    # the cost counts (log parameters, log MACs) are pulled to weight 0, the sources to 1/2 each
    assert model.cost_counts_ == ("params", "flops")
    np.testing.assert_allclose(model.coef_, [0.5, 0.5, 0.0, 0.0], rtol=1e-6, atol=1e-9)
    ratio = model.predict(archs[300:]) / geo
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)


def test_the_parameter_count_helps_when_no_source_resembles_the_target(task):
    archs, _, sources = task
    # a device whose latency follows model size, which neither source tracks
    y = 1e-6 * get_space("mobilenetv3").count_params(archs).astype(float)
    scores = {}
    for counts in [(), ("params",), ("params", "flops")]:
        model = TransferLatencyRegressor(sources, cost_counts=counts,
                                         linear_share=0).fit(archs[:10], y[:10])
        assert model.coef_.shape == (2 + len(counts),)
        scores[counts] = spearmanr(model.predict(archs[300:]), y[300:])[0]
    assert scores[("params",)] > 0.99 > scores[()] + 0.05
    assert scores[("params", "flops")] > 0.99


def test_the_linear_stack_joins_once_samples_outnumber_sources(task):
    archs, _, sources = task
    ya, yb = (np.asarray(s.predict(archs), dtype=float) for s in sources)
    y = 0.5 * ya + 2.0 * yb  # latencies that add up: the linear stack is exact
    errors = {}
    for share in (0.0, 0.3):
        model = TransferLatencyRegressor(sources, linear_share=share, cost_counts=())
        model.fit(archs[:10], y[:10])
        errors[share] = mape(model.predict(archs[300:]), y[300:])
        if share:
            np.testing.assert_allclose(model.linear_coef_, [0.5, 2.0], rtol=1e-6)
    assert errors[0.3] < 0.8 * errors[0.0]
    one = TransferLatencyRegressor(sources).fit(archs[:1], y[:1])  # 1 sample < 2 sources
    assert not one.linear_coef_.any()


@pytest.mark.parametrize("counts", ["params", ("macs",), ("params", "params")])
def test_bad_cost_counts_are_refused(task, counts):
    archs, y, sources = task
    with pytest.raises(ValueError, match="cost_counts must be"):
        TransferLatencyRegressor(sources, cost_counts=counts).fit(archs[:10], y[:10])


def test_a_space_that_cannot_count_stacks_the_sources_only_unless_counts_are_asked():
    toy = toy_space()
    archs = toy.sample(60, random_state=0)
    y = 1.0 + FCCEncoder(space=toy).fit_transform(archs).sum(axis=1)
    source = make_pipeline(FCCEncoder(space=toy), Ridge()).fit(archs, y)
    model = TransferLatencyRegressor([source], space=toy).fit(archs[:10], y[:10])
    assert model.cost_counts_ == () and model.coef_.shape == (1,)
    with pytest.raises(ValueError, match="space 'toy' cannot count params"):
        TransferLatencyRegressor([source], space=toy,
                                 cost_counts=("params",)).fit(archs[:10], y[:10])


def test_with_useless_sources_many_samples_learn_from_the_encoding(task):
    archs, y, _ = task
    rng = np.random.default_rng(0)
    noise = [ridge_source(archs[:300], rng.uniform(1, 2, 300)) for _ in range(2)]
    model = TransferLatencyRegressor(noise, random_state=0).fit(archs[:200], y[:200])
    assert model.mode_ in ("scratch", "stack+residual")
    assert set(model.cv_scores_) == {"stack", "stack+residual", "scratch"}
    scratch = ridge_source(archs[:200], y[:200])
    assert mape(model.predict(archs[300:]), y[300:]) < mape(scratch.predict(archs[300:]), y[300:]) + 0.01


def test_fit_never_refits_the_sources(task, monkeypatch):
    archs, y, sources = task
    before = [s.predict(archs[:5]) for s in sources]
    for s in sources:
        monkeypatch.setattr(s, "fit", lambda *a, **k: pytest.fail("a source was refit"))
    TransferLatencyRegressor(sources, random_state=0).fit(archs[:40], y[:40])
    for s, b in zip(sources, before):
        np.testing.assert_array_equal(s.predict(archs[:5]), b)


def test_clone_keeps_the_fitted_sources(task):
    archs, y, sources = task
    est = TransferLatencyRegressor(sources, shrinkage=0.1)
    copy = clone(est)
    assert copy.sources is not None and all(a is b for a, b in zip(copy.sources, sources))
    assert copy.get_params()["shrinkage"] == 0.1
    copy.fit(archs[:10], y[:10])
    assert mape(copy.predict(archs[300:]), y[300:]) < 0.03


def test_frozen_estimator_sources_work(task):
    frozen = pytest.importorskip("sklearn.frozen")
    archs, y, sources = task
    wrapped = [frozen.FrozenEstimator(s) for s in sources]
    model = clone(TransferLatencyRegressor(wrapped)).fit(archs[:10], y[:10])
    assert mape(model.predict(archs[300:]), y[300:]) < 0.03
    assert source_space(wrapped[0]) == "mobilenetv3"


def test_grid_search_over_a_parameter(task):
    archs, y, sources = task
    search = GridSearchCV(
        TransferLatencyRegressor(sources), {"shrinkage": [0.0, 0.01, 10.0]}, cv=3,
        scoring="neg_mean_absolute_percentage_error",
    ).fit(archs[:30], y[:30])
    assert search.best_params_["shrinkage"] in (0.0, 0.01, 10.0)
    assert search.best_estimator_.predict(archs[300:302]).shape == (2,)


def test_pickle_then_predict_in_a_fresh_process(task, tmp_path):
    archs, y, sources = task
    model = TransferLatencyRegressor(sources).fit(archs[:10], y[:10])
    path = tmp_path / "transfer.joblib"
    joblib.dump((model, archs[300:310]), path)
    code = (
        "import joblib, sys, numpy as np\n"
        f"model, X = joblib.load({str(path)!r})\n"
        "np.save(sys.argv[1], model.predict(X))\n"
    )
    out = tmp_path / "pred.npy"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True)
    np.testing.assert_allclose(np.load(out), model.predict(archs[300:310]))


def test_unfitted_source_is_named(task):
    archs, y, sources = task
    unfitted = make_pipeline(FCCEncoder(), Ridge())
    with pytest.raises(ValueError, match=r"sources\[1\] \(Pipeline\) is not fitted"):
        TransferLatencyRegressor([sources[0], unfitted]).fit(archs[:10], y[:10])


def test_source_of_another_space_is_named(task):
    archs, y, sources = task
    resnet = get_space("resnet").sample(30, random_state=0)
    other = ridge_source(resnet, np.arange(1.0, 31.0))
    with pytest.raises(ValueError, match=r"sources\[2\] was fitted for space 'resnet'.*'mobilenetv3'"):
        TransferLatencyRegressor([*sources, other]).fit(archs[:10], y[:10])


@pytest.mark.parametrize(
    ("sources", "match"),
    [([], "sources is empty"), (None, "list of fitted estimators"), ([object()], r"sources\[0\] has no predict")],
)
def test_bad_sources_argument(task, sources, match):
    archs, y, _ = task
    with pytest.raises(ValueError, match=match):
        TransferLatencyRegressor(sources).fit(archs[:5], y[:5])


def test_single_estimator_instead_of_a_list(task):
    archs, y, sources = task
    with pytest.raises(ValueError, match="wrap it in a list"):
        TransferLatencyRegressor(sources[0]).fit(archs[:5], y[:5])


@pytest.mark.parametrize(
    ("params", "match"),
    [({"mode": "best"}, "mode must be one of"), ({"shrinkage": -1.0}, "shrinkage must be"),
     ({"cv": 1}, "cv must be an int >= 2"), ({"residual": None, "mode": "scratch"}, "needs a residual"),
     ({"residual": "mlp"}, "residual must be")],
)
def test_bad_parameters(task, params, match):
    archs, y, sources = task
    with pytest.raises(ValueError, match=match):
        TransferLatencyRegressor(sources, **params).fit(archs[:5], y[:5])


def test_bad_latencies_are_named(task):
    archs, y, sources = task
    bad = y[:5].copy()
    bad[3] = 0.0
    with pytest.raises(ValueError, match=r"y\[3\] = 0.0"):
        TransferLatencyRegressor(sources).fit(archs[:5], bad)
    with pytest.raises(ValueError, match="5 architectures but y has 4"):
        TransferLatencyRegressor(sources).fit(archs[:5], y[:4])


def test_forced_modes_need_two_samples(task):
    archs, y, sources = task
    with pytest.raises(ValueError, match="at least 2 samples"):
        TransferLatencyRegressor(sources, mode="scratch").fit(archs[:1], y[:1])
    model = TransferLatencyRegressor(sources, mode="stack+residual").fit(archs[:3], y[:3])
    assert np.all(model.predict(archs[300:]) > 0)


def test_active_loop_starts_from_a_tiny_initial_set(task):
    archs, y, sources = task
    loop = ActiveLatencyEstimator(
        estimator=TransferLatencyRegressor(sources), n_initial=5, n_step=10, n_test=50,
        acc_threshold=0.97, max_samples=100, random_state=0,
    ).fit(archs, y)
    assert loop.termination_condition_ == "threshold_reached"
    assert len(loop.y_train_) <= 15
    assert all(s is t for s, t in zip(loop.estimator_.sources, sources))


def test_importing_the_module_does_not_import_torch():
    code = "import sys, esm_sklearn.transfer, esm_sklearn.conformal; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def load_help_fbnet(device):
    """The bundled HELP FBNet table, else the shared copy, else skip."""
    from esm_sklearn.datasets import load_help

    try:
        return load_help(device=device, space="fbnet")
    except (TypeError, FileNotFoundError, ValueError):
        if not (SHARED_HELP / "fbnet_latency.csv").is_file():
            pytest.skip("no copy of the HELP tables")
        return load_help(path=SHARED_HELP, device=device, space="fbnet")


def test_help_fbnet_ten_samples_rank_a_new_device():
    table = load_help_fbnet("raspi4")
    archs = table.data[:1200]
    frame = table.frame.iloc[:1200]
    sources = [ridge_source(archs[:1000], frame[d].to_numpy(float)[:1000])
               for d in ("pixel3", "silver_4114", "1080ti_64")]
    y = frame["raspi4"].to_numpy(float)
    model = TransferLatencyRegressor(sources).fit(archs[:10], y[:10])
    assert spearmanr(model.predict(archs[1000:]), y[1000:])[0] > 0.85


@pytest.mark.parametrize("counts", [None, True, 1, (c for c in ["params"])])
def test_cost_counts_that_are_not_a_collection_of_names_get_a_value_error(task, counts):
    archs, y, sources = task
    with pytest.raises(ValueError, match="cost_counts must be"):
        TransferLatencyRegressor(sources, cost_counts=counts).fit(archs[:10], y[:10])


def test_linear_share_is_fixed_at_fit(task):
    archs, y, sources = task
    model = TransferLatencyRegressor(sources).fit(archs[:10], y[:10])
    before = model.predict(archs[300:])
    model.set_params(linear_share=0.0)
    np.testing.assert_array_equal(model.predict(archs[300:]), before)


def test_a_user_defined_space_works_with_the_residual_model():
    toy = toy_space()
    archs = toy.sample(60, random_state=0)
    y = 1.0 + FCCEncoder(space=toy).fit_transform(archs).sum(axis=1)
    source = make_pipeline(FCCEncoder(space=toy), Ridge()).fit(archs, 2 + np.sqrt(y))
    model = TransferLatencyRegressor([source], space=toy, random_state=0).fit(archs[:40], y[:40])
    assert set(model.cv_scores_) == {"stack", "stack+residual", "scratch"}
    assert np.all(model.predict(archs[40:]) > 0)


@pytest.mark.parametrize("mode", ["scratch", "stack+residual"])
def test_forced_linear_modes_never_predict_below_the_floor(task, mode):
    archs, _, sources = task
    y = np.exp(np.random.default_rng(0).normal(0, 2, len(archs)))  # wild latencies
    model = TransferLatencyRegressor(sources, mode=mode, random_state=0).fit(archs[:25], y[:25])
    pred = model.predict(archs[300:])
    assert pred.min() >= model.latency_floor_ == pytest.approx(0.1 * y[:25].min())
