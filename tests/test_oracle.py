"""TorchLatencyOracle, ReferenceMonitor (quality control) and TableOracle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from esm_sklearn import TableOracle, TorchLatencyOracle, get_space
from esm_sklearn.models import block_specs
from esm_sklearn.spaces import arch_key
from esm_sklearn.store import MeasurementStore

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# No burn-in: it runs real models for seconds, which these tests do not check.
TINY = {"resolution": 32, "warmup": 1, "runs": 5, "threads": 1, "burn_in": 0.0}


def _mnv3(depth, kernel, ratio):
    return {"space": "mobilenetv3", "depth": [depth] * 4,
            "kernel_size": [[kernel] * depth] * 4, "expand_ratio": [[ratio] * depth] * 4}


def _fake_timer(monkeypatch, level=lambda call: 1.0):
    """Replace the real timing by ``(1 + total depth) * level(call index)`` ms."""
    calls = []

    def fake(self, space, arch, dev):
        lat = (1.0 + sum(arch["depth"])) * level(len(calls))
        calls.append(arch_key(arch))
        return {"latency_ms": lat, "median_ms": lat, "min_ms": lat, "p90_ms": lat,
                "std_ms": 0.0, "runs": int(self.runs), "status": "ok", "error": None}

    monkeypatch.setattr(TorchLatencyOracle, "_time_arch", fake)
    return calls


# ----------------------------------------------------------------- timing
def test_deep_arch_is_slower_than_shallow_on_cpu():
    shallow, deep = _mnv3(1, 3, 0.5), _mnv3(7, 7, 1.0)
    oracle = TorchLatencyOracle(resolution=32, warmup=2, runs=10, threads=1, n_references=0,
                                burn_in=0.0)
    lat = oracle.measure([shallow, deep])
    stats = oracle.stats_
    assert lat.shape == (2,) and np.isfinite(lat).all()
    assert list(stats["status"]) == ["ok", "ok"] and list(stats["runs"]) == [10, 10]
    assert (stats["min_ms"] <= stats["median_ms"]).all()
    assert (stats["median_ms"] <= stats["p90_ms"]).all()
    # 28 blocks with 7x7 kernels and full expansion against 4 of the cheapest ones.
    assert stats["median_ms"].iloc[1] > stats["median_ms"].iloc[0]
    info = oracle.device_info_
    assert info["type"] == "cpu" and info["threads"] == 1 and info["resolution"] == 32
    assert info["batch_size"] == 1 and info["torch"] == torch.__version__ and info["name"]


def test_thread_setting_restored_even_on_interrupt(monkeypatch):
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    seen = []
    space = get_space("mobilenetv3")
    original = space.build_model

    def spy(arch, resolution=None, num_classes=1000):
        seen.append(torch.get_num_threads())
        return original(arch, resolution=resolution, num_classes=num_classes)

    space.build_model = spy
    oracle = TorchLatencyOracle(n_references=0, threads=wanted, resolution=32, warmup=0, runs=1,
                                paired=False, burn_in=0.0)
    oracle.measure([_mnv3(1, 3, 0.5)], space=space)
    assert seen == [wanted] and torch.get_num_threads() == before

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    space.build_model = interrupt
    with pytest.raises(KeyboardInterrupt):
        oracle.measure([_mnv3(1, 3, 0.5)], space=space)
    assert torch.get_num_threads() == before


# ------------------------------------------------------------- bad inputs
def test_arch_outside_space_raises_before_any_timing():
    space = get_space("mobilenetv3")
    built = []
    space.builder = lambda *a, **k: built.append(1)
    bad = _mnv3(1, 3, 0.5)
    bad["kernel_size"][2] = [4]
    store = MeasurementStore()
    oracle = TorchLatencyOracle(store=store, **TINY)
    with pytest.raises(ValueError, match=r"architecture 1: .*unit 2.*kernel_size"):
        oracle.measure([_mnv3(1, 3, 0.5), bad], space=space)
    assert built == [] and len(store) == 0  # neither references nor archs were timed
    with pytest.raises(ValueError, match="space 'resnet' given to space 'mobilenetv3'"):
        oracle.measure([{**_mnv3(1, 3, 0.5), "space": "resnet"}], space=space)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu", "", 3])
def test_bad_device_string(device):
    with pytest.raises(ValueError, match="device"):
        TorchLatencyOracle(device=device, **TINY).measure([_mnv3(1, 3, 0.5)])


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        TorchLatencyOracle(device="cuda:1", **TINY).measure([_mnv3(1, 3, 0.5)])


@pytest.mark.parametrize("param, value", [("runs", 0), ("trim", 0.5), ("batch_size", 0),
                                          ("check_every", 0), ("threads", 1.5),
                                          ("variance_threshold", 0), ("store", 3)])
def test_bad_parameters_name_themselves(param, value):
    oracle = TorchLatencyOracle(**{**TINY, param: value})
    with pytest.raises(ValueError, match=param):
        oracle.measure([_mnv3(1, 3, 0.5)])


def test_get_params_and_clone_keep_parameters():
    oracle = TorchLatencyOracle(device="cpu", runs=7, store="x.sqlite", drift_correction=True)
    params = clone(oracle).get_params()
    assert params["runs"] == 7 and params["store"] == "x.sqlite" and params["drift_correction"]


# --------------------------------------------------------------- failures
def test_failed_model_is_recorded_and_collection_goes_on(monkeypatch):
    space = get_space("mobilenetv3")
    archs = space.sample(3, random_state=3)
    poison = arch_key(archs[1])
    original = space.build_model

    def builder(arch, resolution=None, num_classes=1000):
        if arch_key(arch) == poison:
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(arch, resolution=resolution, num_classes=num_classes)

    space.build_model = builder
    store = MeasurementStore()
    oracle = TorchLatencyOracle(store=store, n_references=0, **TINY)
    lat = oracle.measure(archs, space=space)
    assert np.isfinite(lat[[0, 2]]).all() and np.isnan(lat[1])
    assert list(oracle.stats_["status"]) == ["ok", "failed", "ok"]
    assert "RuntimeError: CUDA out of memory" in oracle.stats_["error"].iloc[1]
    assert oracle.summary_["n_failed"] == 1 and oracle.summary_["n_measured"] == 3
    rows = store.frame("arch")
    failed = rows[rows["status"] == "failed"]
    assert list(failed["arch_key"]) == [poison] and "out of memory" in failed["error"].iloc[0]
    assert len(store.to_latency_table()) == 2
    # A rerun does not retry the recorded failure and still reports it.
    again = oracle.measure(archs, space=space)
    assert np.isnan(again[1]) and oracle.summary_["n_skipped"] == 3
    assert oracle.stats_["status"].iloc[1] == "failed" and len(store.frame("arch")) == 3


# ------------------------------------------------------- store and resume
def test_store_resume_never_remeasures(monkeypatch, tmp_path):
    calls = _fake_timer(monkeypatch)
    space = get_space("mobilenetv3")
    archs = space.sample(5, random_state=0)
    path = tmp_path / "runs" / "cpu.sqlite"
    oracle = TorchLatencyOracle(store=str(path), n_references=2, check_every=2, **TINY)
    first = oracle.measure(archs[:3], sampling="balanced")
    n_first = len(calls)
    assert n_first == 3 + 2 * 3  # 3 archs, references at start, after 2 and at the end
    lat = oracle.measure(archs, sampling="random")
    new_calls = calls[n_first:]
    measured = [k for k in new_calls if k in {arch_key(a) for a in archs}]
    assert sorted(measured) == sorted(arch_key(a) for a in archs[3:])
    np.testing.assert_array_equal(lat[:3], first)
    assert list(oracle.stats_["skipped"]) == [True] * 3 + [False] * 2
    assert oracle.summary_["n_skipped"] == 3 and oracle.summary_["n_measured"] == 2
    # References were timed anew, as a new QC round continuing the numbering.
    assert oracle.qc_["round"].iloc[0] == 3
    with MeasurementStore(path) as store:
        table = store.to_latency_table()
        assert len(table) == 5 and table["arch"].is_unique
        assert list(table["sampling"]) == ["balanced"] * 3 + ["random"] * 2
        refs = store.to_references_table()
        assert sorted(refs["round"].unique()) == [0, 1, 2, 3, 4]
        # A fully measured list costs nothing, not even references.
        n_rows = len(store)
    n_calls = len(calls)
    oracle.measure(list(reversed(archs)))
    assert len(calls) == n_calls and oracle.summary_["n_skipped"] == 5
    with MeasurementStore(path) as store:
        assert len(store) == n_rows


def test_progress_bar_shows_qc_state(monkeypatch, capsys):
    _fake_timer(monkeypatch)
    archs = get_space("mobilenetv3").sample(3, random_state=0)
    TorchLatencyOracle(n_references=1, check_every=2, progress=True, **TINY).measure(archs)
    err = capsys.readouterr().err
    assert "3/3" in err and "qc=ok" in err and "failed=0" in err


def test_duplicates_in_input_are_timed_once(monkeypatch):
    calls = _fake_timer(monkeypatch)
    arch = _mnv3(2, 5, 0.6667)
    as_json = json.dumps({**arch, "expand_ratio": [[0.667] * 2] * 4})
    lat = TorchLatencyOracle(n_references=0, **TINY).measure([arch, as_json])
    assert len(calls) == 1 and lat[0] == lat[1]


# -------------------------------------------------------- quality control
def test_oracle_retimes_a_drifting_batch_and_keeps_every_row(monkeypatch):
    # Call order: refs 0-1, archs 2-3, refs 4-5, archs 6-7, refs 8-9 (slow), re-timed
    # archs 10-11, refs 12-13.
    _fake_timer(monkeypatch, level=lambda call: 1.5 if call in (8, 9) else 1.0)
    archs = get_space("mobilenetv3").sample(4, random_state=1)
    store = MeasurementStore()
    oracle = TorchLatencyOracle(store=store, n_references=2, check_every=2, max_retries=1, **TINY)
    oracle.measure(archs)
    qc = oracle.qc_
    assert list(qc["passed"]) == [True, True, False, True]
    assert list(qc["retry"]) == [0, 0, 0, 1] and list(qc["batch"].fillna(-1)) == [-1, 0, 1, 1]
    assert oracle.qc_check_.passed and oracle.summary_["n_retimed"] == 2
    assert list(oracle.stats_["retries"]) == [0, 0, 1, 1]
    rows = store.frame("arch")
    assert len(rows) == 6  # re-timed rows are new rows, nothing is overwritten
    table = store.to_latency_table()
    assert len(table) == 4 and table["arch"].is_unique
    refs = store.frame("reference")
    assert len(refs) == 8
    passed = [json.loads(e)["passed"] for e in refs["extra"]]
    assert passed == [True] * 4 + [False] * 2 + [True] * 2


def test_drift_correction_scales_by_surrounding_references(monkeypatch):
    # refs r0 (calls 0-1), arch A (2), refs r1 (3-4), arch B (5), refs r2 (6-7);
    # everything from call 5 on runs twice as slow.
    _fake_timer(monkeypatch, level=lambda call: 2.0 if call >= 5 else 1.0)
    a, b = _mnv3(2, 3, 0.5), _mnv3(2, 7, 1.0)  # same fake base latency
    oracle = TorchLatencyOracle(n_references=2, check_every=1, max_retries=0,
                                drift_correction=True, **TINY)
    lat = oracle.measure([a, b])
    raw = oracle.stats_["raw_latency_ms"].to_numpy()
    assert raw[1] == pytest.approx(2 * raw[0])
    assert lat[1] == pytest.approx(lat[0])
    assert oracle.stats_["drift_factor"].iloc[1] == pytest.approx(
        2 * oracle.stats_["drift_factor"].iloc[0])
    with pytest.raises(ValueError, match="n_references"):
        TorchLatencyOracle(n_references=0, drift_correction=True, **TINY).measure([a])


def test_reference_archs_are_fixed_per_space_whatever_the_seed():
    space = get_space("resnet")
    refs = TorchLatencyOracle(n_references=3, random_state=5).reference_archs(space)
    again = TorchLatencyOracle(n_references=3, random_state=5).reference_archs("resnet")
    assert refs == again and len({arch_key(r) for r in refs}) == 3
    assert all(space.validate(r) == r for r in refs)
    # issue 9 item 4: --seed does not pick the references
    assert refs == TorchLatencyOracle(n_references=3, random_state=6).reference_archs(space)
    assert refs[:2] == TorchLatencyOracle(n_references=2).reference_archs(space)
    mnv3 = TorchLatencyOracle(n_references=3).reference_archs("mobilenetv3")
    assert [r["depth"] for r in mnv3] != [r["depth"] for r in refs]


def test_runs_with_different_seeds_time_the_same_model_under_each_ref_id(monkeypatch):
    _fake_timer(monkeypatch)
    space = get_space("mobilenetv3")
    store = MeasurementStore()
    for seed, archs in ((0, space.sample(2, random_state=0)), (7, space.sample(2, random_state=7))):
        TorchLatencyOracle(store=store, n_references=2, random_state=seed, **TINY).measure(archs)
    refs = store.frame("reference")
    assert refs["qc_round"].nunique() == 4
    assert refs.groupby("ref_id")["arch_key"].nunique().tolist() == [1, 1]


def test_references_a_store_already_holds_are_reused(monkeypatch):
    calls = _fake_timer(monkeypatch)
    space = get_space("mobilenetv3")
    old_ref = _mnv3(3, 7, 1.0)  # as an older version, seeded differently, may have drawn
    store = MeasurementStore()
    oracle = TorchLatencyOracle(store=store, n_references=2, **TINY)
    skey_oracle = TorchLatencyOracle(store=store, n_references=2, **TINY)
    skey_oracle.measure([_mnv3(1, 3, 0.5)], space=space)
    skey = skey_oracle.setting_key_
    ref_rows = store.frame("reference")
    store.add({"kind": "reference", "arch_key": arch_key(old_ref), "space": "mobilenetv3",
               "setting_key": skey, "ref_id": 5, "qc_round": 9, "latency_ms": 22.0,
               "status": "ok"})
    oracle.n_references = 6
    n = len(calls)
    oracle.measure([_mnv3(2, 3, 0.5)], space=space)
    timed_refs = store.frame("reference")
    new = timed_refs[timed_refs["qc_round"] > 9]
    by_id = dict(zip(new["ref_id"], new["arch_key"], strict=False))
    assert by_id[5] == arch_key(old_ref)
    assert by_id[0] == ref_rows[ref_rows["ref_id"] == 0]["arch_key"].iloc[0]
    assert len(calls) > n


# ------------------------------------------------------------ block profiling
def test_profile_blocks_gives_lut_format(tmp_path):
    space = get_space("mobilenetv3")
    store = MeasurementStore()
    oracle = TorchLatencyOracle(store=store, resolution=32, warmup=0, runs=2, threads=1)
    lut = oracle.profile_blocks(space)
    specs = block_specs(space, resolution=32)
    assert len(lut) == len(specs) and (lut["latency_ms"] > 0).all()
    assert list(lut["in_hw"]) == [s.in_hw for s in specs]
    assert (lut["runs"] == 2).all()
    assert len(store.frame("block")) == len(specs)
    shared_lut = SHARED / "datasets" / "h200" / "mobilenetv3_b1_lut.csv"
    if shared_lut.exists():
        ref = pd.read_csv(shared_lut)
        assert list(lut.columns) == list(ref.columns)
        assert list(lut["position"]) == list(ref["position"])
        key = ["unit", "kernel_size", "expand_ratio", "in_channels", "out_channels", "stride"]
        assert lut[key].astype(float).values.tolist() == ref[key].astype(float).values.tolist()


# ---------------------------------------------------------------- table oracle
def test_table_oracle_replays_and_names_missing_arch():
    space = get_space("resnet")
    archs = space.sample(4, random_state=2)
    oracle = TableOracle(archs, [1.0, 2.0, 3.0, 4.0])
    queried = [json.dumps(archs[3]), {**archs[0], "expand_ratio": [
        [0.667 if v == 0.6667 else v for v in unit] for unit in archs[0]["expand_ratio"]]}]
    np.testing.assert_array_equal(oracle.measure(queried), [4.0, 1.0])
    assert oracle.candidates() == archs and oracle.archs_ == archs and len(oracle) == 4
    missing = space.sample(1, random_state=99)[0]
    with pytest.raises(KeyError, match=r"architecture 1 is not in the table.*depth"):
        oracle.measure([archs[0], missing])
    assert clone(oracle).measure([archs[1]])[0] == 2.0


def test_table_oracle_bad_tables():
    archs = get_space("densenet").sample(2, random_state=0)
    with pytest.raises(ValueError, match="2 architectures but 3 latencies"):
        TableOracle(archs, [1.0, 2.0, 3.0]).measure(archs)
    with pytest.raises(ValueError, match="row 1.*not finite"):
        TableOracle(archs, [1.0, np.inf]).measure(archs)
    with pytest.raises(ValueError, match="row 0"):
        TableOracle([{**archs[0], "depth": [0] * 5}, archs[1]], [1.0, 2.0]).measure(archs)
    twice = TableOracle([archs[0], archs[0]], [1.0, 3.0])
    assert twice.measure([archs[0]])[0] == 2.0 and len(twice) == 1


def test_table_oracle_replays_nan_as_a_failed_measurement():
    archs = get_space("densenet").sample(3, random_state=0)
    oracle = TableOracle(archs, [1.0, np.nan, 3.0])
    out = oracle.measure([archs[1], archs[0], json.dumps(archs[1])])
    assert np.isnan(out[0]) and out[1] == 1.0 and np.isnan(out[2])
    assert oracle.candidates() == archs and len(oracle) == 3  # failed ones stay candidates
    # a failed row and a measured row of one architecture: the measurement counts
    again = TableOracle([archs[0], archs[0]], [np.nan, 4.0])
    assert again.measure([archs[0]])[0] == 4.0
    with pytest.raises(ValueError, match="latencies must be numbers"):
        TableOracle(archs, ["fast", 1.0, 2.0]).measure(archs)
