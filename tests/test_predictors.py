"""Tests of MLPLatencyRegressor and make_latency_pipeline."""

from __future__ import annotations

import json
import subprocess
import sys

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.exceptions import DataConversionWarning
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from esm_sklearn import (
    FCCEncoder,
    FeatureCountEncoder,
    FeatureEncoder,
    LookupTableEncoder,
    MLPLatencyRegressor,
    OneHotArchEncoder,
    StatisticalEncoder,
    make_latency_pipeline,
)
from esm_sklearn.datasets import bundled_path, load_bundled
from esm_sklearn.metrics import get_scorer, latency_accuracy
from esm_sklearn.predictors import ArrayBatchIterator, LatencyMLP

# Cheap settings for checks that fit many times; accuracy is not their point.
CHEAP = dict(max_epochs=3, module__hidden_units=8, random_state=0)


def _rel_error(y, pred) -> float:
    return float(np.mean(np.abs(pred - y) / y))


@pytest.fixture(scope="module")
def linear_data():
    """Counts-like features, latency linear in them with 5% multiplicative noise."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 5, size=(500, 12)).astype(np.float64)
    y = (1.0 + X @ rng.uniform(0.1, 1.0, 12)) * rng.normal(1.0, 0.05, 500)
    return X, y


@pytest.fixture(scope="module")
def resnet_b32():
    return load_bundled("h200_resnet_b32")


# ------------------------------------------------------- scikit-learn checks
_XFAIL = {
    "check_no_attributes_set_in_init": (
        "skorch's NeuralNet.__init__ sets history_, initialized_ and virtual_params_"
    ),
    "check_set_params": (
        "skorch initialises callbacks inside set_params(callbacks=...), so an invalid "
        "callbacks value raises there instead of in fit"
    ),
}


def _expected_failed_checks(estimator):
    return _XFAIL


@parametrize_with_checks(
    [MLPLatencyRegressor(**CHEAP), MLPLatencyRegressor(**CHEAP, early_stopping=False)],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


# Checks that need no numeric data, for the pipeline over architectures.
_DATA_FREE_CHECKS = [
    name
    for name in (
        "check_get_params_invariance",
        "check_set_params",
        "check_no_attributes_set_in_init",
        "check_estimator_repr",
        "check_estimator_cloneable",
        "check_do_not_raise_errors_in_init_or_set_params",
        "check_mixin_order",
        "check_valid_tag_types",
        "check_estimator_tags_renamed",
    )
    if hasattr(estimator_checks, name)
]


@pytest.mark.parametrize("check", _DATA_FREE_CHECKS)
@pytest.mark.parametrize("regressor", ["mlp", "ridge"])
def test_sklearn_data_free_checks_on_pipeline(regressor, check):
    pipe = make_latency_pipeline(regressor=regressor)
    getattr(estimator_checks, check)("Pipeline", pipe)


# ----------------------------------------------------------------- module
def test_module_starts_as_its_linear_path():
    torch.manual_seed(0)
    x = torch.randn(7, 5)
    module = LatencyMLP(5, hidden_units=4, n_layers=2)
    assert torch.equal(module(x), module.linear(x))
    torch.nn.init.normal_(module.mlp[-1].weight)  # a trained MLP multiplies the linear path
    assert torch.allclose(module(x), module.linear(x) * torch.exp(module.mlp(x)))


def test_module_standardises_with_its_buffers():
    module = LatencyMLP(3)
    module.in_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
    module.in_scale.copy_(torch.tensor([2.0, 2.0, 2.0]))
    x = torch.tensor([[3.0, 4.0, 5.0]])
    assert torch.allclose(module(x), module.linear(torch.ones(1, 3)))


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(n_features=0), "n_features"),
        (dict(n_features=3, hidden_units=0), "hidden_units"),
        (dict(n_features=3, n_layers=-1), "n_layers"),
        (dict(n_features=3, dropout=1.0), "dropout"),
    ],
)
def test_module_rejects_bad_parameters(kwargs, word):
    with pytest.raises(ValueError, match=word):
        LatencyMLP(**kwargs)


def test_batch_iterator_covers_every_row_once():
    from skorch.dataset import Dataset

    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10, dtype=np.float32)[:, None]
    batches = list(ArrayBatchIterator(Dataset(X, y), batch_size=4, shuffle=True))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    rows = torch.cat([b[1] for b in batches])[:, 0].sort().values
    assert torch.equal(rows, torch.arange(10, dtype=torch.float32))
    assert len(ArrayBatchIterator(Dataset(X, y), batch_size=4)) == 3


# -------------------------------------------------------------- regressor
def test_is_a_skorch_regressor_with_the_papers_network():
    from skorch import NeuralNetRegressor

    reg = MLPLatencyRegressor()
    assert isinstance(reg, NeuralNetRegressor)
    params = reg.get_params()
    assert params["module__hidden_units"] == 64 and params["module__n_layers"] == 3
    assert params["lr"] == 0.01 and params["optimizer__weight_decay"] == 1e-4
    assert params["optimizer"] is torch.optim.Adam and params["criterion"] is torch.nn.MSELoss
    assert not hasattr(reg, "predict_proba")


def test_input_types_output_shape_and_quiet(linear_data, capsys):
    X, y = linear_data
    reg = MLPLatencyRegressor(**CHEAP).fit(X.astype(np.int64), list(y))
    pred = reg.predict(X[:10])
    assert pred.shape == (10,) and pred.dtype == np.float64
    assert np.array_equal(pred, reg.predict(X[:10].astype(np.float32)))
    assert reg.n_features_in_ == 12 and reg.x_mean_.shape == (12,)
    assert capsys.readouterr().out == ""
    with pytest.warns(DataConversionWarning):
        MLPLatencyRegressor(**CHEAP).fit(X, y[:, None])


def test_seed_repeats_exactly_and_leaves_torch_rng_alone(linear_data):
    X, y = linear_data
    state = torch.get_rng_state()
    for early_stopping in (True, False):
        a = MLPLatencyRegressor(max_epochs=5, random_state=1, early_stopping=early_stopping)
        b = clone(a)
        assert np.array_equal(a.fit(X, y).predict(X), b.fit(X, y).predict(X))
    assert torch.equal(state, torch.get_rng_state())
    c = MLPLatencyRegressor(max_epochs=5, random_state=2, early_stopping=False).fit(X, y)
    assert not np.array_equal(a.predict(X), c.predict(X))


def test_chunked_prediction_equals_one_batch(linear_data):
    X, y = linear_data
    reg = MLPLatencyRegressor(**CHEAP).fit(X, y)
    whole = reg.predict(X)
    reg.set_params(predict_batch_size=7)
    np.testing.assert_allclose(reg.predict(X), whole, rtol=1e-6)


def test_linear_data_keeps_the_closed_form_start(linear_data):
    """Noise-only residuals: early stopping must not trade the linear fit for noise."""
    X, y = linear_data
    train, test = slice(0, 300), slice(300, None)
    reg = MLPLatencyRegressor(random_state=0).fit(X[train], y[train])
    ridge = Ridge(alpha=1.0).fit(X[train], y[train])
    assert reg.best_epoch_ is not None
    assert len(reg.history) <= reg.best_epoch_ + reg.n_iter_no_change
    assert _rel_error(y[test], reg.predict(X[test])) <= _rel_error(y[test], ridge.predict(X[test]))


def test_mlp_learns_an_interaction_a_linear_model_cannot():
    """Latency = (sum of block costs) x resolution factor, as in the OFA tables."""
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 5, size=(800, 10)).astype(np.float64)
    resolution = rng.choice(np.arange(128, 225, 16), size=800).astype(np.float64)
    X = np.column_stack([counts, resolution])
    y = (1.0 + counts @ rng.uniform(0.1, 1.0, 10)) * (resolution / 224) ** 2
    y *= rng.normal(1.0, 0.01, 800)
    train, test = slice(0, 600), slice(600, None)
    reg = MLPLatencyRegressor(random_state=0).fit(X[train], y[train])
    linear = MLPLatencyRegressor(max_epochs=0, early_stopping=False).fit(X[train], y[train])
    assert reg.best_epoch_ > 0
    err = _rel_error(y[test], reg.predict(X[test]))
    assert err < 0.5 * _rel_error(y[test], linear.predict(X[test]))
    assert err < 0.5 * _rel_error(y[test], Ridge().fit(X[train], y[train]).predict(X[test]))


def test_early_stopping_off_trains_all_epochs_on_all_rows(linear_data):
    X, y = linear_data
    reg = MLPLatencyRegressor(max_epochs=4, early_stopping=False, random_state=0).fit(X, y)
    assert len(reg.history) == 4 and reg.best_epoch_ is None
    assert "valid_loss" not in reg.history[-1]
    assert sum(reg.history[-1, "batches", :, "train_batch_size"]) == len(y)
    es = MLPLatencyRegressor(max_epochs=4, random_state=0, validation_fraction=0.25).fit(X, y)
    assert sum(es.history[-1, "batches", :, "valid_batch_size"]) == 125
    whole = MLPLatencyRegressor(max_epochs=2, batch_size=-1, early_stopping=False).fit(X, y)
    assert whole.history[-1, "batches", :, "train_batch_size"] == [len(y)]


def test_target_inverts_to_milliseconds(linear_data):
    X, y = linear_data
    reg = MLPLatencyRegressor(max_epochs=0, early_stopping=False).fit(X, y)
    # epoch 0 is the closed-form linear path: already within the 5% noise
    assert _rel_error(y, reg.predict(X)) < 0.08
    assert reg.y_scale_ == pytest.approx(y.mean())


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_positive_finite_latencies_required(linear_data, bad):
    X, y = linear_data
    y = y.copy()
    y[3] = bad
    with pytest.raises(ValueError, match=r"> 0.*index 3"):
        MLPLatencyRegressor(**CHEAP).fit(X, y)


@pytest.mark.parametrize("removed", ["target", "lr_schedule", "train_linear", "module__skip"])
def test_ablation_switches_are_not_product_parameters(removed):
    assert removed not in MLPLatencyRegressor().get_params()


def test_repr_and_params_show_no_private_field():
    pipe = make_latency_pipeline(space="resnet")
    assert "_params_to_validate" not in repr(pipe)
    assert not [k for k in pipe.get_params() if k.split("__")[-1].startswith("_")]


@pytest.mark.parametrize(
    "params, word",
    [
        (dict(linear_init_alpha=-1.0), "linear_init_alpha"),
        (dict(validation_fraction=1.5), "validation_fraction"),
        (dict(n_iter_no_change=0), "n_iter_no_change"),
        (dict(improvement_se=-1.0), "improvement_se"),
        (dict(max_epochs=-1), "max_epochs"),
        (dict(batch_size=0), "batch_size"),
        (dict(predict_batch_size=0), "predict_batch_size"),
    ],
)
def test_bad_parameters_fail_in_fit_with_their_name(linear_data, params, word):
    X, y = linear_data
    reg = MLPLatencyRegressor(**params)  # stored untouched
    with pytest.raises(ValueError, match=word):
        reg.fit(X, y)


def test_partial_fit_and_warm_start_continue_training(linear_data):
    X, y = linear_data
    reg = MLPLatencyRegressor(max_epochs=2, early_stopping=False, random_state=0)
    reg.partial_fit(X, y)
    weights = reg.module_.mlp[0].weight.detach().clone()
    reg.partial_fit(X, y)
    assert len(reg.history) == 4
    assert not torch.equal(weights, reg.module_.mlp[0].weight)
    with pytest.raises(ValueError, match="features"):
        reg.partial_fit(X[:, :5], y)
    warm = MLPLatencyRegressor(max_epochs=2, early_stopping=False, warm_start=True).fit(X, y)
    warm.fit(X, y)
    assert len(warm.history) == 4


def test_clone_set_params_and_grid_search_on_arrays(linear_data):
    X, y = linear_data
    reg = MLPLatencyRegressor(**CHEAP)
    twin = clone(reg)
    assert twin.get_params()["module__hidden_units"] == 8
    twin.set_params(module__hidden_units=4, lr=0.02)
    assert reg.get_params()["module__hidden_units"] == 8
    search = GridSearchCV(reg, {"module__hidden_units": [4, 8], "lr": [0.01]}, cv=2,
                          scoring=get_scorer("latency_accuracy")).fit(X[:200], y[:200])
    assert search.best_estimator_.module_.mlp[0].out_features in (4, 8)


def test_set_params_on_a_fitted_net_rebuilds_the_module(linear_data):
    X, y = linear_data
    reg = MLPLatencyRegressor(**CHEAP).fit(X, y)
    reg.set_params(module__hidden_units=5)
    assert reg.module_.mlp[0].out_features == 5


# --------------------------------------------------------------- pipeline
@pytest.mark.parametrize(
    "encoding, cls",
    [("fcc", FCCEncoder), ("fc", FeatureCountEncoder), ("fe", FeatureEncoder),
     ("onehot", OneHotArchEncoder), ("stat", StatisticalEncoder)],
)
@pytest.mark.parametrize(
    "regressor, reg_cls",
    [("mlp", MLPLatencyRegressor), ("ridge", Ridge), ("gbm", HistGradientBoostingRegressor),
     ("linear", LinearRegression)],
)
def test_pipeline_steps(encoding, cls, regressor, reg_cls):
    pipe = make_latency_pipeline(encoding, regressor, space="resnet", random_state=3)
    assert isinstance(pipe, Pipeline) and [n for n, _ in pipe.steps] == ["encoder", "regressor"]
    assert type(pipe["encoder"]) is cls and pipe["encoder"].space == "resnet"
    assert type(pipe["regressor"]) is reg_cls
    if regressor in ("mlp", "gbm"):
        assert pipe["regressor"].random_state == 3


def test_pipeline_defaults_and_keywords():
    pipe = make_latency_pipeline(max_epochs=7)
    assert isinstance(pipe["encoder"], FCCEncoder) and pipe["encoder"].space is None
    assert isinstance(pipe["regressor"], MLPLatencyRegressor)
    assert pipe["regressor"].max_epochs == 7
    assert make_latency_pipeline(regressor="ridge")["regressor"].alpha == 1.0
    assert make_latency_pipeline(regressor="ridge", alpha=3.0)["regressor"].alpha == 3.0
    reg = Ridge(alpha=2.0)
    assert make_latency_pipeline(regressor=reg)["regressor"] is reg


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(encoding="bits"), "encoding"),
        (dict(regressor="svm"), "regressor"),
        (dict(encoding="lut"), "lut_table"),
        (dict(encoding="fcc", lut_table="x.csv"), "lut_table"),
        (dict(regressor=Ridge(), alpha=2.0), "alpha"),
        (dict(encoding=3), "encoding"),
    ],
)
def test_pipeline_rejects_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_latency_pipeline(**kwargs)


def test_default_pipeline_fits_architectures(resnet_b32):
    archs, y = resnet_b32.data, resnet_b32.target
    pipe = make_latency_pipeline(random_state=0, max_epochs=20).fit(archs[:100], y[:100])
    pred = pipe.predict(archs[100:])
    assert pred.shape == (30,) and np.isfinite(pred).all()
    ridge = make_latency_pipeline("fcc", "ridge").fit(archs[:100], y[:100])
    assert latency_accuracy(y[100:], pred) >= latency_accuracy(y[100:], ridge.predict(archs[100:]))
    json_pred = pipe.predict([json.dumps(a) for a in archs[100:]])
    assert np.array_equal(pred, json_pred)


def test_lut_with_linear_bias_correction():
    table = load_bundled("h200_resnet_b1")
    lut = bundled_path("h200_resnet_b1", kind="lut")
    pipe = make_latency_pipeline("lut", "linear", lut_table=lut).fit(table.data[:300], table.target[:300])
    assert isinstance(pipe["encoder"], LookupTableEncoder)
    pred = pipe.predict(table.data[300:])
    assert np.isfinite(pred).all() and latency_accuracy(table.target[300:], pred) > 0.5


def test_grid_search_swaps_encoder_and_regressor(resnet_b32):
    archs, y = resnet_b32.data, resnet_b32.target
    grid = {
        "encoder": [FCCEncoder(), FeatureCountEncoder()],
        "regressor": [Ridge(), MLPLatencyRegressor(**CHEAP)],
    }
    search = GridSearchCV(make_latency_pipeline(), grid, cv=2, scoring="neg_mean_absolute_percentage_error")
    search.fit(archs, y)
    assert len(search.cv_results_["params"]) == 4
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_fitted_pipeline_predicts_identically_in_a_fresh_process(resnet_b32, tmp_path):
    archs, y = resnet_b32.data, resnet_b32.target
    pipe = make_latency_pipeline(random_state=0, max_epochs=10).fit(archs[:100], y[:100])
    expected = pipe.predict(archs[100:])
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    (tmp_path / "archs.json").write_text(json.dumps(archs[100:]))
    code = (
        "import json, sys, joblib, numpy as np\n"
        "pipe = joblib.load(sys.argv[1])\n"
        "pred = pipe.predict(json.load(open(sys.argv[2])))\n"
        "np.save(sys.argv[3], pred)\n"
    )
    subprocess.run(
        [sys.executable, "-W", "error", "-c", code, str(tmp_path / "pipe.joblib"),
         str(tmp_path / "archs.json"), str(tmp_path / "pred.npy")],
        check=True, cwd=tmp_path, capture_output=True,
    )
    assert np.array_equal(np.load(tmp_path / "pred.npy"), expected)
    copy = clone(pipe)
    assert copy.get_params()["regressor__max_epochs"] == 10
    assert not hasattr(copy["regressor"], "module_")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device(linear_data):
    X, y = linear_data
    reg = MLPLatencyRegressor(device="cuda", **CHEAP).fit(X, y)
    assert reg.predict(X).dtype == np.float64


def test_predict_runs_with_one_torch_thread_and_restores_the_setting(linear_data):
    X, y = linear_data
    reg = MLPLatencyRegressor(**CHEAP).fit(X, y)
    seen = []
    hook = reg.module_.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pred = reg.predict(X[:50])
        assert seen == [1] and torch.get_num_threads() == 2
        reg.set_params(predict_threads=None)
        np.testing.assert_array_equal(reg.predict(X[:50]), pred)
        assert seen[-1] == 2
    finally:
        hook.remove()
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="predict_threads"):
        MLPLatencyRegressor(**CHEAP, predict_threads=0).fit(X, y)
