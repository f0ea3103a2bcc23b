"""Quality control: reference spread, the paper's 3% check, drift correction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from esm_sklearn import MeasurementStore, check_references
from esm_sklearn.quality import (
    ReferenceCheck,
    ReferenceMonitor,
    drift_correct,
    drift_levels,
    reference_spread,
    reference_spread_after_correction,
)
from esm_sklearn.store import setting_key

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
H200 = SHARED / "datasets" / "h200"
B1_FILES = ["resnet_b1", "mobilenetv3_b1", "densenet_b1"]


def _refs(latencies: np.ndarray, after=None, run=None) -> pd.DataFrame:
    """latencies[round, ref] -> references table."""
    rows = []
    for rnd, row in enumerate(latencies):
        for ref, lat in enumerate(row):
            d = {"space": "resnet", "ref_id": ref, "round": rnd, "batch_size": 1,
                 "latency_ms": lat}
            if after is not None:
                d["after_arch_id"] = after[rnd]
            if run is not None:
                d["run"] = run
            rows.append(d)
    return pd.DataFrame(rows)


def test_spread_is_coefficient_of_variation():
    lat = np.array([[10.0, 4.0], [11.0, 4.0], [12.0, 4.4]])
    spread = reference_spread(_refs(lat))
    assert spread["ref_id"].tolist() == [0, 1]
    np.testing.assert_allclose(spread["cv"], lat.std(axis=0) / lat.mean(axis=0))
    np.testing.assert_allclose(spread["max_rel_dev"], np.ptp(lat, axis=0) / lat.mean(axis=0))
    assert spread["n_rounds"].tolist() == [3, 3]
    # dict form gives the same numbers
    as_dict = reference_spread({r: list(row) for r, row in enumerate(lat)})
    np.testing.assert_allclose(as_dict["cv"], spread["cv"])


def test_check_threshold_and_statistic():
    lat = np.array([[10.0, 5.0], [10.4, 5.0], [10.0, 5.05]])  # cv of ref 0 = 1.9%
    check = check_references(_refs(lat))
    assert isinstance(check, ReferenceCheck) and check.passed and bool(check)
    assert check.statistic == "cv" and check.threshold == 0.03
    assert not check_references(_refs(lat), threshold=0.01).passed
    # max_rel_dev of ref 0 is 3.9%: fails the 3% threshold where cv passes
    strict = check_references(_refs(lat), statistic="max_rel_dev")
    assert not strict.passed
    assert strict.spread["passed"].tolist() == [False, True]
    assert "FAILED" in str(strict)


def test_check_groups_per_run():
    steady = np.array([[10.0, 5.0], [10.1, 5.0]])
    drifting = np.array([[10.0, 5.0], [14.0, 5.0]])
    frame = pd.concat([_refs(steady, run=1), _refs(drifting, run=2)])
    check = check_references(frame)
    assert not check.passed
    failed = check.spread[~check.spread["passed"]]
    assert failed[["run", "ref_id"]].values.tolist() == [[2, 0]]


@pytest.mark.parametrize("mutate, match", [
    (lambda f: f.drop(columns="latency_ms"), "latency_ms"),
    (lambda f: f.drop(columns="round"), "round"),
    (lambda f: f.assign(latency_ms=f["latency_ms"].where(f["ref_id"] != 1, -1.0)),
     "ref_id=1"),
    (lambda f: f.assign(latency_ms=f["latency_ms"].where(f["ref_id"] != 1, 0.0)),
     "positive"),
    (lambda f: f[(f["ref_id"] != 1) | (f["round"] == 0)], "ref_id=1 has 1 round"),
    (lambda f: pd.concat([f, f.iloc[:1]]), "more than one timing"),
    (lambda f: f.assign(ref_id="a"), "ref_id"),
    (lambda f: f.iloc[:0], "empty"),
])
def test_bad_reference_tables(mutate, match):
    frame = _refs(np.array([[10.0, 5.0], [10.1, 5.0], [10.0, 5.1]]))
    with pytest.raises(ValueError, match=match):
        check_references(mutate(frame))


def test_bad_check_arguments():
    frame = _refs(np.array([[10.0, 5.0], [10.1, 5.0]]))
    with pytest.raises(ValueError, match="statistic"):
        check_references(frame, statistic="variance")
    with pytest.raises(ValueError, match="threshold"):
        check_references(frame, threshold=0)
    with pytest.raises(ValueError, match="DataFrame"):
        check_references([1, 2, 3])


@pytest.mark.skipif(not all((H200 / f"{n}_references.csv").exists() for n in B1_FILES),
                    reason="shared/datasets/h200 batch-1 reference files not present")
@pytest.mark.parametrize("name", B1_FILES)
def test_h200_batch1_references_fail(name):
    refs = pd.read_csv(H200 / f"{name}_references.csv")
    check = check_references(refs)
    assert check.passed is False
    assert check.worst > 0.03
    assert len(check.spread) == refs.groupby(["run", "ref_id"]).ngroups


def _drift_case(seed=0, n_arch=300, every=100, n_refs=4, noise=0.0):
    """Archs and refs timed on a device whose speed drifts smoothly."""
    rng = np.random.default_rng(seed)
    true_arch = rng.uniform(1, 10, n_arch)
    true_refs = rng.uniform(2, 8, n_refs)
    after = [-1, *range(every, n_arch + 1, every)]

    def level(pos):  # slowdown as a function of position
        return 1.0 + 0.5 * np.sin(np.asarray(pos, dtype=float) / n_arch * 3.0)

    # interpolation is exact for a piecewise-linear drift: sample level at rounds
    knots = np.array(after, dtype=float)
    drift = np.interp(np.arange(1, n_arch + 1), knots, level(knots))
    table = pd.DataFrame({"run": 1, "order": np.arange(1, n_arch + 1),
                          "latency_ms": true_arch * drift, "median_ms": true_arch * drift})
    ref_lat = np.outer(level(knots), true_refs) * (1 + noise * rng.standard_normal(
        (len(knots), n_refs)))
    refs = _refs(ref_lat, after=after, run=1)
    return table, refs, true_arch, level(knots)


def test_drift_correct_recovers_piecewise_linear_drift():
    table, refs, true_arch, knot_levels = _drift_case()
    out = drift_correct(table, refs)
    assert out is not table and "drift_factor" in out and "drift_factor" not in table
    # drift_factor is the level relative to the references' median level
    np.testing.assert_allclose(table["latency_ms"],
                               true_arch * out["drift_factor"] * np.median(knot_levels))
    # corrected = true latency x one common scale (the median level over rounds)
    ratio = out["latency_ms"] / true_arch
    np.testing.assert_allclose(ratio, ratio.iloc[0], rtol=1e-9)
    np.testing.assert_allclose(ratio.iloc[0], np.median(knot_levels), rtol=1e-9)
    np.testing.assert_allclose(out["median_ms"], out["latency_ms"])
    levels = drift_levels(refs)
    assert levels["round"].tolist() == list(range(len(knot_levels)))
    np.testing.assert_allclose(levels["level"], knot_levels / np.median(knot_levels))


def test_drift_correct_per_run_and_errors():
    t1, r1, _, _ = _drift_case(seed=1)
    t2, r2, _, _ = _drift_case(seed=1)
    t2["run"], r2["run"] = 2, 2
    r2["latency_ms"] *= 1.5  # run 2 on a slower day: pooled baseline puts it on one scale
    t2["latency_ms"] *= 1.5
    out = drift_correct(pd.concat([t1, t2], ignore_index=True), pd.concat([r1, r2]))
    n = len(t1)
    np.testing.assert_allclose(out["latency_ms"].iloc[:n], out["latency_ms"].iloc[n:])
    per_run = drift_correct(pd.concat([t1, t2], ignore_index=True), pd.concat([r1, r2]),
                            baseline="run")
    corrected = per_run["latency_ms"].to_numpy()
    np.testing.assert_allclose(corrected[n:] / corrected[:n], 1.5)
    with pytest.raises(ValueError, match="run 2"):
        drift_correct(t2, r1)
    with pytest.raises(ValueError, match="no 'run' column"):
        drift_correct(t1.drop(columns="run"), pd.concat([r1, r2]))
    with pytest.raises(ValueError, match="after_arch_id"):
        drift_correct(t1, r1.drop(columns="after_arch_id"))
    with pytest.raises(ValueError, match="order"):
        drift_correct(t1.drop(columns="order"), r1)
    bad = r1.copy()
    bad.loc[bad.index[0], "after_arch_id"] = 5
    with pytest.raises(ValueError, match="different after_arch_id"):
        drift_correct(t1, bad)
    with pytest.raises(ValueError, match="baseline"):
        drift_correct(t1, r1, baseline="mean")


def test_leave_one_out_spread_drops_for_common_drift():
    _, refs, _, _ = _drift_case(noise=0.002)
    loo = reference_spread_after_correction(refs)
    assert (loo["cv_before"] > 0.05).all()
    assert (loo["cv_after"] < 0.01).all()
    assert not loo["passed_before"].any() and loo["passed_after"].all()
    # noise of a single reference is not removed by the others' level
    _, refs, _, _ = _drift_case(noise=0.0)
    refs.loc[(refs["ref_id"] == 0) & (refs["round"] == 1), "latency_ms"] *= 1.3
    loo = reference_spread_after_correction(refs)
    assert loo.loc[loo["ref_id"] == 0, "cv_after"].iloc[0] > 0.05


@pytest.mark.skipif(not (H200 / "resnet_b32_references.csv").exists(),
                    reason="shared/datasets/h200/resnet_b32_references.csv not present")
def test_h200_b32_drift_correction_reduces_spread():
    refs = pd.read_csv(H200 / "resnet_b32_references.csv")
    table = pd.read_csv(H200 / "resnet_b32.csv")
    loo = reference_spread_after_correction(refs)
    assert loo["cv_after"].mean() < loo["cv_before"].mean()
    out = drift_correct(table, refs)
    assert len(out) == len(table) and out["drift_factor"].between(0.5, 2).all()


def test_store_export_feeds_drift_correct():
    key = setting_key({"name": "t", "batch_size": 1}, {"runs": 5})
    with MeasurementStore() as store:
        def refs(rnd, after, scale):
            for r in range(3):
                store.add({"kind": "reference", "arch_key": f'{{"ref":{r}}}', "space": "resnet",
                           "setting_key": key, "ref_id": r, "qc_round": rnd,
                           "after_arch_id": after, "latency_ms": (2.0 + r) * scale,
                           "status": "ok", "batch": 1})
        refs(0, -1, 1.0)
        # the device slows down linearly from x1 (round 0) to x2 (round 1); every
        # arch truly takes 1 ms. Round 1 follows the last arch (id 13).
        for _ in range(10):
            pos = len(store) + 1  # the id the row will get
            store.add({"kind": "arch", "arch_key": f'{{"depth":[{pos}]}}',
                       "space": "resnet", "setting_key": key,
                       "latency_ms": 1.0 + (pos + 1) / 14, "status": "ok", "batch": 1})
        refs(1, 13, 2.0)
        table, references = store.to_latency_table(), store.to_references_table()
    assert table["order"].tolist() == list(range(4, 14))
    assert check_references(references).passed is False
    out = drift_correct(table, references)
    assert out["drift_factor"].is_monotonic_increasing
    np.testing.assert_allclose(out["latency_ms"], out["latency_ms"].iloc[0], rtol=1e-12)
    np.testing.assert_allclose(out["latency_ms"], 1.5)  # scale of the references' median


# ------------------------------------------------------- reference monitor
def _monitor(levels, **kw):
    """A monitor whose single reference takes ``levels[round]`` ms."""
    it = iter(levels)
    return ReferenceMonitor(["ref"], lambda ref_id, ref: next(it), **kw)


def test_qc_stable_timer_passes_without_retries():
    done = []
    monitor = _monitor([10.0, 10.1, 9.9, 10.0], threshold=0.03, max_retries=2)
    monitor.run([[1], [2], [3]], lambda b, batch, retry: done.append((b, retry)))
    assert done == [(0, 0), (1, 0), (2, 0)]
    qc = monitor.frame()
    assert qc["passed"].all() and qc["final"].all() and list(qc["retry"]) == [0, 0, 0, 0]
    assert monitor.summary().passed


def test_qc_transient_drift_retimes_only_that_batch():
    done = []
    monitor = _monitor([10.0, 10.0, 13.0, 10.1, 10.0], threshold=0.03, max_retries=2)
    monitor.run([[1], [2], [3]], lambda b, batch, retry: done.append((b, retry)))
    assert done == [(0, 0), (1, 0), (1, 1), (2, 0)]
    qc = monitor.frame()
    assert list(qc["passed"]) == [True, True, False, True, True]
    assert list(qc["final"]) == [True, True, False, True, True]
    assert qc.loc[2, "spread"] > 0.03
    # The drifting round is recorded but does not count against kept data.
    assert monitor.summary().passed and monitor.summary().spread["n_rounds"].iloc[0] == 4


def test_qc_persistent_drift_exhausts_retries_and_is_recorded():
    done = []
    monitor = _monitor([10.0, 10.0, 12.0, 12.5, 12.0, 10.0], threshold=0.03, max_retries=2)
    monitor.run([[1], [2], [3]], lambda b, batch, retry: done.append((b, retry)))
    # Batch 1 is timed 1 + max_retries times, then accepted as failed; batch 2 goes on.
    assert done == [(0, 0), (1, 0), (1, 1), (1, 2), (2, 0)]
    qc = monitor.frame()
    assert list(qc["passed"]) == [True, True, False, False, False, True]
    assert list(qc["final"]) == [True, True, False, False, True, True]
    assert "FAILED" not in monitor.state  # the last round passed again
    summary = monitor.summary()
    assert not summary.passed and summary.spread["cv"].iloc[0] > 0.03


def test_qc_history_is_the_baseline_of_a_resumed_session():
    history = pd.DataFrame({"ref_id": [0, 0], "round": [0, 1], "latency_ms": [10.0, 10.0]})
    monitor = _monitor([15.0], threshold=0.03, history=history)
    outcome = monitor.check(after_arch_id=7)
    assert outcome["round"] == 2 and not outcome["passed"] and outcome["after_arch_id"] == 7
