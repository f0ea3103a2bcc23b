import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from esm_sklearn.metrics import latency_accuracy
from esm_sklearn.plotting import (
    plot_binwise_sample_size,
    plot_device_accuracy,
    plot_encoding_accuracy,
    plot_predicted_vs_measured,
)


@pytest.fixture
def results():
    """Two datasets (one with a LUT), three regressors, two train sizes; random scores."""
    rng = np.random.RandomState(0)
    rows = []
    for dataset, device, encodings in [
        ("h200_resnet_b1", "h200", ["fcc", "stat", "lut"]),
        ("help_ofa", "2080ti_1", ["fcc", "stat"]),
    ]:
        for encoding in encodings:
            for regressor in ["ridge", "mlp", "gbm"]:
                for train_size in (300, 1000):
                    rows.append({
                        "dataset": dataset, "device": device, "encoding": encoding,
                        "regressor": regressor, "train_size": train_size,
                        "accuracy": rng.uniform(0.8, 0.99), "kendall_tau": rng.uniform(0.5, 0.9),
                    })
    return pd.DataFrame(rows)


def _bar_containers(ax) -> list[BarContainer]:
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def _bars(ax) -> list[Rectangle]:
    return [p for container in _bar_containers(ax) for p in container.patches]


def _bar_heights(ax, label: str) -> np.ndarray:
    for container in _bar_containers(ax):
        if container.get_label() == label:
            return np.array([p.get_height() for p in container.patches])
    raise AssertionError(f"no bars labelled {label!r}: {[c.get_label() for c in _bar_containers(ax)]}")


def test_encoding_accuracy_averages_each_encoding_over_datasets_per_regressor(results):
    fig = plot_encoding_accuracy(results)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(_bars(ax)) == 3 * 3  # encodings fcc, stat, lut x regressors
    largest = results[results["train_size"] == 1000]
    expected = largest[largest["regressor"] == "mlp"].groupby("encoding")["accuracy"].mean() * 100
    # mlp is drawn first; encodings in the order fcc, stat, lut.
    assert _bar_containers(ax)[0].get_label() == "mlp"
    np.testing.assert_allclose(_bar_heights(ax, "mlp"), expected[["fcc", "stat", "lut"]])
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["FCC\n(2 datasets)", "statistical\n(2 datasets)", "lookup table\n(1 datasets)"]
    assert "Fig. 9" in fig.get_suptitle()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mlp", "ridge", "gbm"]


def test_encoding_accuracy_uses_the_requested_train_size(results):
    fig = plot_encoding_accuracy(results, train_size=300, hue=None, metric="kendall_tau")
    (ax,) = fig.axes
    small = results[results["train_size"] == 300]
    expected = small.groupby(["dataset", "encoding"])["kendall_tau"].mean().groupby("encoding").mean()
    np.testing.assert_allclose(_bar_heights(ax, "all"), expected[["fcc", "stat", "lut"]])
    with pytest.raises(ValueError, match="train_size=500"):
        plot_encoding_accuracy(results, train_size=500)


def test_device_accuracy_has_a_group_per_dataset_and_a_bar_per_encoding(results):
    fig = plot_device_accuracy(results, regressor="ridge")
    (ax,) = fig.axes
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    # The device named in the dataset name is not repeated.
    assert ticks == ["h200_resnet_b1\nN=1000", "help_ofa\n2080ti_1\nN=1000"]
    assert len(_bars(ax)) == 2 * 3
    rows = results[(results["regressor"] == "ridge") & (results["train_size"] == 1000)]
    fcc = rows[rows["encoding"] == "fcc"]["accuracy"].to_numpy() * 100
    np.testing.assert_allclose(_bar_heights(ax, "FCC"), fcc)
    lut = _bar_heights(ax, "lookup table")
    assert np.isfinite(lut[0]) and np.isnan(lut[1])  # no LUT for the HELP device
    assert "ridge" in fig.get_suptitle() and "Fig. 10" in fig.get_suptitle()


def test_a_failed_model_does_not_squash_the_axis_but_its_value_is_printed(results):
    results = results.copy()
    failed = (results["encoding"] == "stat") & (results["dataset"] == "help_ofa")
    results.loc[failed, "accuracy"] = -0.5
    fig = plot_device_accuracy(results, regressor="ridge")
    (ax,) = fig.axes
    assert ax.get_ylim()[0] >= 70  # the other scores lie in 80..99
    assert "-50.0" in [t.get_text() for t in ax.texts]


def test_device_accuracy_rejects_an_absent_regressor(results):
    with pytest.raises(ValueError, match="no rows of regressor 'svr'.*ridge"):
        plot_device_accuracy(results, regressor="svr")


def test_predicted_vs_measured_draws_one_panel_per_encoding_with_its_scores():
    rng = np.random.RandomState(1)
    y = rng.uniform(1, 10, 50)
    frames = [
        pd.DataFrame({"encoding": e, "regressor": "mlp", "y_true": y,
                      "y_pred": y * rng.uniform(1 - s, 1 + s, 50)})
        for e, s in [("stat", 0.3), ("fcc", 0.05), ("fc", 0.1), ("onehot", 0.2)]
    ]
    predictions = pd.concat(frames, ignore_index=True)
    fig = plot_predicted_vs_measured(predictions, ncols=3)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(fig.axes) == 6 and len(visible) == 4
    assert visible[0].get_title().startswith("FCC + mlp")  # paper order, not input order
    for ax, frame in zip(visible, [frames[1], frames[2], frames[3], frames[0]]):
        (points,) = ax.collections
        assert len(points.get_offsets()) == 50
        accuracy = latency_accuracy(frame["y_true"], frame["y_pred"])
        assert f"acc {accuracy:.1%}" in ax.get_title()
        assert len(ax.get_lines()) == 3  # diagonal and the +-10% band
    assert visible[0].get_xlim() == visible[3].get_xlim()
    assert "Fig. 8" in fig.get_suptitle()


def test_binwise_sample_size_draws_a_bar_per_bin_and_size():
    rows = []
    for seed in range(2):
        for size, acc in ((100, 0.8), (400, 0.9)):
            for b in range(5):
                rows.append({"train_size": size, "bin": b, "seed": seed, "depth_low": 2 * b,
                             "depth_high": 2 * b + 1, "count": 10, "train_count": size // 5,
                             "accuracy": acc + 0.01 * seed, "overall": acc})
    fig = plot_binwise_sample_size(pd.DataFrame(rows))
    (ax,) = fig.axes
    assert len(_bars(ax)) == 10
    labels = [c.get_label() for c in _bar_containers(ax)]
    assert labels == [
        "trained on 100 samples (all bins: 80.0%)", "trained on 400 samples (all bins: 90.0%)"
    ]
    np.testing.assert_allclose(_bar_heights(ax, labels[1]), 90.5)
    assert ax.get_xticklabels()[1].get_text() == "bin 1\ndepth 2-3\ntest n=10\ntrain n=20 vs 80"
    assert "Fig. 3" in fig.get_suptitle()


@pytest.mark.parametrize(
    "plot, frame, missing",
    [
        (plot_encoding_accuracy, pd.DataFrame({"dataset": ["a"], "accuracy": [0.9]}), "encoding"),
        (plot_device_accuracy, pd.DataFrame({"encoding": ["fcc"], "accuracy": [0.9]}), "dataset"),
        (plot_predicted_vs_measured, pd.DataFrame({"encoding": ["fcc"], "y_true": [1.0]}), "y_pred"),
        (plot_binwise_sample_size, pd.DataFrame({"bin": [0], "accuracy": [0.9]}), "train_size"),
    ],
)
def test_missing_columns_are_named(plot, frame, missing):
    with pytest.raises(ValueError, match=f"missing column.*{missing}"):
        plot(frame)


def test_missing_metric_column_is_named(results):
    with pytest.raises(ValueError, match="'worst_bin' not in the table"):
        plot_encoding_accuracy(results, metric="worst_bin")


def test_figures_save_to_png_and_leave_pyplot_alone(results, tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    path = tmp_path / "fig9.png"
    plot_encoding_accuracy(results).savefig(path, dpi=40)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == before


# ------------------------------------------------ studies/compare_encodings.py
@pytest.fixture
def study(load_study):
    backend = matplotlib.get_backend()
    try:
        return load_study("compare_encodings")
    finally:
        matplotlib.use(backend)  # the script selects Agg; keep the session's backend


@pytest.mark.parametrize(
    "n_rows, expected",
    [(5000, [300, 1000]), (756, [300, 604]), (332, [265]), (206, [164]), (1250, [300, 1000])],
)
def test_study_train_sizes_keep_a_fifth_for_testing(study, n_rows, expected):
    assert study.plan_train_sizes(n_rows, [300, 1000]) == expected


def test_study_default_wins_only_when_it_beats_both_baselines(study):
    rows = [
        ("a", 300, "mlp", 0.90), ("a", 300, "ridge", 0.85), ("a", 300, "gbm", 0.88),
        ("b", 300, "mlp", 0.90), ("b", 300, "ridge", 0.92), ("b", 300, "gbm", 0.80),
    ]
    results = pd.DataFrame(
        [{"dataset": d, "device": "x", "train_size": n, "encoding": "fcc", "regressor": r,
          "accuracy": a} for d, n, r, a in rows]
        + [{"dataset": "a", "device": "x", "train_size": 300, "encoding": "fc",
            "regressor": "ridge", "accuracy": 0.99}]  # other encodings do not count
    )
    table = study.default_vs_baselines(results).set_index("dataset")
    assert table["default_wins"].tolist() == [True, False]
    assert table["best_baseline"].tolist() == ["fcc+gbm", "fcc+ridge"]
    assert math.isclose(table.loc["b", "margin"], -0.02)


def test_study_writes_tables_and_figures(study, tmp_path):
    out = tmp_path / "results"
    results = study.main([
        "--datasets", "h200_densenet_b1", "--encodings", "fcc", "stat", "lut",
        "--regressors", "ridge", "linear", "--seeds", "2", "--train-sizes", "100",
        "--fig3-n", "20", "--out", str(out),
    ])
    # One row per encoding x regressor; the LUT runs because densenet has one.
    assert len(results) == 3 * 2
    assert set(results["encoding"]) == {"fcc", "stat", "lut"}
    assert (results["train_size"] == 100).all() and (results["test_size"] == 106).all()
    assert results[["accuracy", "within_10", "kendall_tau", "worst_bin"]].notna().all().all()
    assert (results["worst_bin"] <= results["accuracy"] + 1e-12).all()
    saved = pd.read_csv(out / "comparison.csv")
    assert len(saved) == len(results)
    for name in ["fig3_binwise_sample_size", "fig8_predicted_vs_measured", "fig9_encoding_accuracy",
                 "fig10_device_accuracy"]:
        assert (out / f"{name}.png").stat().st_size > 1000
        assert f"({name}.png)" in (out / "comparison.md").read_text()
    fig8 = pd.read_csv(out / "fig8_predictions.csv")
    assert set(fig8["encoding"]) == {"fcc", "stat", "lut"} and len(fig8) == 3 * 106
