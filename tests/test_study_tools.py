"""plot_convergence and the helpers of studies/active_learning_study.py and nas_search.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from esm_sklearn import get_space
from esm_sklearn.plotting import plot_convergence


@pytest.fixture
def history():
    rows = []
    for dataset, threshold in (("a", 0.9), ("b", 0.95)):
        for strategy, n_rounds in (("balanced", 2), ("random", 4)):
            for seed in (0, 1):
                for i in range(n_rounds):
                    rows.append({"dataset": dataset, "strategy": strategy, "seed": seed,
                                 "n_samples": 300 + 100 * i, "threshold": threshold,
                                 "worst_bin": threshold - 0.05 + 0.05 * i / (n_rounds - 1)
                                 - 0.01 * (strategy == "random" and seed == 1)})
    return pd.DataFrame(rows)


def test_plot_convergence_draws_one_line_per_run(history):
    fig = plot_convergence(history)
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["a", "b"]
    ax = axes[0]
    runs = [line for line in ax.lines if line.get_linestyle() == "-" and len(line.get_xdata()) > 1]
    assert len(runs) == 4  # 2 strategies x 2 seeds
    assert sorted(max(line.get_xdata()) for line in runs) == [400, 400, 600, 600]
    np.testing.assert_allclose(max(max(line.get_ydata()) for line in runs), 90.0)  # percent
    # The threshold is drawn, and the end markers are filled only where it was reached.
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and np.allclose(dashed[0].get_ydata(), 90.0)
    ends = [line for line in ax.lines if line.get_marker() == "o"]
    filled = [line.get_markerfacecolor() != "white" for line in ends]
    assert len(ends) == 4 and sum(filled) == 3  # the random seed-1 run ends below
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["balanced", "random"]


def test_plot_convergence_errors(history):
    with pytest.raises(ValueError, match="missing column"):
        plot_convergence(history.drop(columns="strategy"))
    with pytest.raises(ValueError, match="metric column 'acc'"):
        plot_convergence(history, metric="acc")
    fig = plot_convergence(history.drop(columns=["dataset", "threshold"]), panel=None)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 1


def test_study_loop_sizes_and_test_set(load_study):
    from esm_sklearn import ActiveLatencyEstimator
    from esm_sklearn.predictors import make_latency_pipeline
    from esm_sklearn.spaces import arch_key

    study = load_study("active_learning_study")
    args = study.parse_args([])
    assert study.loop_sizes(5000, args) == (200, 300, 100, False)
    n_test, n_initial, n_step, scaled = study.loop_sizes(300, args)
    assert scaled and n_test + n_initial + n_step <= 300
    # The study calibrates each threshold on the test set a run will draw: check that a
    # run with other settings draws that same set.
    space = get_space("resnet")
    archs = space.sample(300, strategy="balanced", random_state=0, unique=True)
    y = np.array([1.0 + 0.1 * sum(a["depth"]) for a in archs])
    test = study.loop_test_set(space, archs, y, 50, seed=3, args=args)
    assert np.bincount(space.bin_index(test, 5)).tolist() == [10] * 5
    run = ActiveLatencyEstimator(
        make_latency_pipeline(regressor="ridge", space=space), strategy="random", n_initial=70,
        n_step=30, n_test=50, max_iter=1, acc_threshold=1.0, random_state=3).fit(archs, y)
    assert [arch_key(a) for a in run.X_test_] == [arch_key(a) for a in test]


def test_nas_study_counts_match_torch(load_study):
    nas = load_study("nas_search")
    archs = get_space("resnet").sample(3, strategy="balanced", random_state=4)
    params, macs = nas.costs(archs, resolution=32)
    counted = [nas.torch_counts(a, 32) for a in archs]
    assert params.tolist() == [p for p, _ in counted]
    assert macs.tolist() == [m for _, m in counted]


def test_plot_convergence_judges_each_run_by_its_own_threshold():
    history = pd.DataFrame({
        "strategy": "balanced", "seed": [0, 0, 1, 1], "n_samples": [300, 400, 300, 400],
        "threshold": [0.90, 0.90, 0.95, 0.95], "worst_bin": [0.85, 0.92, 0.85, 0.92]})
    ax = plot_convergence(history, panel=None).axes[0]
    assert sorted(line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == "--") == [
        90.0, 95.0]
    ends = [line for line in ax.lines if line.get_marker() == "o"]
    # Both end at 92%: over seed 0's threshold (90%), under seed 1's (95%).
    assert [line.get_markerfacecolor() != "white" for line in ends] == [True, False]
