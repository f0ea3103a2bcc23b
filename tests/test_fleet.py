"""FleetLatencyOracle on a LocalCluster of worker processes (issue 12).

Real PyTorch timing of tiny models (resolution 32, 5 runs); faults are injected
by oracle subclasses built inside the tests (cloudpickle ships them by value).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed")

from esm_sklearn import ActiveLatencyEstimator, MeasurementStore, TorchLatencyOracle, get_space
from esm_sklearn.fleet import (
    FleetLatencyOracle,
    reference_agreement,
    start_local_cluster,
    unit_factor,
    unit_resource,
)
from esm_sklearn.spaces import arch_key

pytestmark = pytest.mark.slow

TINY = {"resolution": 32, "warmup": 1, "runs": 5, "threads": None, "burn_in": 0.0,
        "rel_ci": None, "n_references": 1, "check_every": 4, "max_retries": 0,
        "variance_threshold": 0.5}
SPACE = get_space("mobilenetv3")


@pytest.fixture(scope="module")
def cluster():
    with start_local_cluster(2, "device:cpu") as cluster:
        yield cluster


def _arch_rows(store_path) -> pd.DataFrame:
    with MeasurementStore(store_path) as store:
        return store.frame(kind="arch")


# ------------------------------------------------------------------ no cluster
def test_params_clone_pickle_without_a_cluster(tmp_path):
    from sklearn.base import clone

    fleet = FleetLatencyOracle(TorchLatencyOracle(runs=5), n_workers=2)
    assert clone(fleet).get_params()["oracle__runs"] == 5
    fleet.set_params(oracle__runs=7)
    assert fleet.oracle.runs == 7
    back = pickle.loads(pickle.dumps(fleet))
    assert back.get_params()["n_workers"] == 2 and "_conn" not in back.__dict__
    # unpickling touches no file: the store path stays a path, nothing is created
    stored = FleetLatencyOracle(TorchLatencyOracle(store=str(tmp_path / "s.sqlite")))
    pickle.loads(pickle.dumps(stored))
    assert not (tmp_path / "s.sqlite").exists()
    with pytest.raises(ValueError, match="n_workers .* or scheduler"):
        FleetLatencyOracle(n_workers=2, scheduler="tcp://x:1").measure(SPACE.sample(1))
    with pytest.raises(ValueError, match="n_workers must be an int >= 1 or None, got 0"):
        FleetLatencyOracle(n_workers=0).measure(SPACE.sample(1))
    with pytest.raises(ValueError, match="drift_correction is not supported"):
        FleetLatencyOracle(TorchLatencyOracle(drift_correction=True)).measure(SPACE.sample(1))
    assert unit_resource("cuda:3") == "device:cuda"
    with pytest.raises(ValueError, match="only 'cpu' and 'cuda"):
        unit_resource("tpu")


def test_calibration_helpers():
    assert unit_factor([2.0, 8.0], [1.0, 2.0]) == pytest.approx(math.sqrt(2 * 4))
    refs = pd.DataFrame({"unit": ["0", "0", "1", "1"], "ref_id": [0, 1, 0, 1],
                         "latency_ms": [1.0, 2.0, 1.2, 2.4]})
    agree = reference_agreement(refs)
    assert agree["max_rel_dev"].to_numpy() == pytest.approx([0.2 / 1.1, 0.4 / 2.2])


# ------------------------------------------------------------- on the cluster
def test_real_timing_on_two_units_one_store_and_resume(cluster, tmp_path):
    store = tmp_path / "fleet.sqlite"
    archs = SPACE.sample(6, random_state=1)
    fleet = FleetLatencyOracle(TorchLatencyOracle(store=str(store), **TINY),
                               scheduler=cluster.scheduler_address)
    with fleet:
        y = fleet.measure(archs, sampling="random")
        assert y.shape == (6,) and np.isfinite(y).all() and (y > 0).all()
        rows = _arch_rows(store)
        # one row per arch, written by the client, naming the unit that timed it
        assert sorted(rows["arch_key"]) == sorted(arch_key(a) for a in archs)
        extras = [json.loads(e) for e in rows["extra"]]
        assert {e["unit"] for e in extras} <= {"0", "1"}
        assert all(e["worker"].startswith("tcp://") and e["unit_factor"] > 0 for e in extras)
        for e, lat in zip(extras, rows["latency_ms"], strict=True):
            assert lat == pytest.approx(e["raw_latency_ms"] / e["unit_factor"])
        # references timed on every unit, QC per unit (one store run each)
        units = fleet.units_
        assert len(units) == 2 and set(units["state"]) == {"active"}
        assert units["run"].nunique() == 2 and units["qc_passed"].notna().all()
        refs = fleet.references_
        assert set(refs["unit"]) == set(units["unit"])
        assert units["factor"].mean() == pytest.approx(1.0)  # 1 reference: median of 2 = mean
        assert fleet.summary_["n_measured"] == 6 and fleet.summary_["n_duplicates"] == 0
        # a rerun resumes: nothing is timed again
        again = fleet.measure(archs)
        assert fleet.summary_["n_skipped"] == 6 and fleet.summary_["n_measured"] == 0
        np.testing.assert_allclose(again, y)
    assert len(_arch_rows(store)) == 6
    assert "_conn" not in fleet.__dict__  # closed by the context manager


def test_active_estimator_uses_the_fleet_unchanged(cluster, tmp_path):
    fleet = FleetLatencyOracle(TorchLatencyOracle(**{**TINY, "n_references": 0}),
                               scheduler=cluster.scheduler_address)
    est = ActiveLatencyEstimator(oracle=fleet, space="mobilenetv3", n_initial=6, n_step=3,
                                 n_test=4, max_iter=1, acc_threshold=0.5, random_state=0)
    est.set_params(oracle__oracle__runs=4)
    with fleet:
        est.fit()
    assert len(est.predict(SPACE.sample(3, random_state=5))) == 3
    # the fitted estimator pickles without a live client and unpickles touching nothing
    back = pickle.loads(pickle.dumps(est))
    assert "_conn" not in back.oracle.__dict__


def _kill_once_oracle(flag: Path, victim: str, **params):
    """An oracle whose worker process dies (once) when it reaches ``victim``."""

    def time_architecture(self, arch, space=None):
        if arch_key(arch) == victim and not flag.exists():
            flag.write_text("killed")
            os._exit(1)
        return TorchLatencyOracle.time_architecture(self, arch, space)

    cls = type("KillOnceOracle", (TorchLatencyOracle,),
               {"time_architecture": time_architecture})
    return cls(**params)


def test_worker_killed_mid_batch_every_arch_exactly_once(cluster, tmp_path):
    store = tmp_path / "kill.sqlite"
    archs = SPACE.sample(8, random_state=2)
    flag = tmp_path / "killed.flag"
    oracle = _kill_once_oracle(flag, arch_key(archs[3]), store=str(store), **TINY)
    with FleetLatencyOracle(oracle, scheduler=cluster.scheduler_address) as fleet:
        y = fleet.measure(archs)
    assert flag.exists()  # a worker did die mid-run
    assert np.isfinite(y).all()
    rows = _arch_rows(store)
    counts = rows["arch_key"].value_counts()
    assert sorted(counts.index) == sorted(arch_key(a) for a in archs)
    assert (counts == 1).all() and (rows["status"] == "ok").all()
    assert fleet.summary_["n_lost"] >= 1
    assert "left the cluster" in " ".join(fleet.units_["note"])
    # the nanny restarted the worker: it joined as a new unit, calibrated like the others
    assert fleet.units_.loc[fleet.units_["state"] == "active", "factor"].notna().all()


def _broken_unit_oracle(**params):
    """Every architecture fails on worker 1 (a broken device), works elsewhere."""

    def time_architecture(self, arch, space=None):
        from distributed import get_worker

        out = TorchLatencyOracle.time_architecture(self, arch, space)
        if get_worker().name == 1 and arch_key(arch) not in self.reference_keys:
            out.update(status="failed", error="RuntimeError: device lost", latency_ms=np.nan)
        return out

    cls = type("BrokenUnitOracle", (TorchLatencyOracle,),
               {"time_architecture": time_architecture,
                "reference_keys": {arch_key(a) for a in
                                   TorchLatencyOracle(n_references=1).reference_archs(SPACE)}})
    return cls(**params)


def test_a_unit_that_keeps_failing_is_retired(cluster, tmp_path):
    # Last test on the shared cluster: it retires one of its workers.
    store = tmp_path / "broken.sqlite"
    archs = SPACE.sample(8, random_state=3)
    oracle = _broken_unit_oracle(store=str(store), **TINY)
    fleet = FleetLatencyOracle(oracle, scheduler=cluster.scheduler_address, max_unit_failures=2)
    with pytest.warns(RuntimeWarning, match=r"retired worker .*unit 1.*2 architectures failed "
                                            r"on it that other units timed fine"):
        with fleet:
            y = fleet.measure(archs)
    assert np.isfinite(y).all()  # every arch timed fine on the healthy unit
    units = fleet.units_.set_index("unit")
    assert units.loc["1", "state"] == "retired" and units.loc["0", "state"] == "active"
    rows = _arch_rows(store)
    ok = rows[rows["status"] == "ok"]
    assert sorted(ok["arch_key"]) == sorted(arch_key(a) for a in archs)  # once each
    failed = rows[rows["status"] == "failed"]
    assert len(failed) >= 2 and set(failed["error"]) == {"RuntimeError: device lost"}


# ----------------------------------------------------------------------- CLI
def _collect(store, n=5):
    cmd = [sys.executable, "-m", "esm_sklearn.cli", "collect", "--space", "mobilenetv3",
           "--n", str(n), "--store", str(store), "--resolution", "32", "--runs", "5",
           "--warmup", "1", "--burn-in", "0", "--n-references", "1", "--check-every", "3", "--max-retries", "0",
           "--workers", "2", "--no-progress"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _n_arch_rows_read_only(path) -> int:
    """Arch rows so far, read without opening (or creating) the store for writing."""
    import sqlite3

    if not Path(path).exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as conn:
            return conn.execute("SELECT COUNT(*) FROM measurements WHERE kind = 'arch'"
                                ).fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def test_cli_workers_killed_client_resumes_each_arch_once(tmp_path):
    from esm_sklearn.cli import _collect_archs

    store = tmp_path / "cli.sqlite"
    proc = _collect(store)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if _n_arch_rows_read_only(store) >= 2:
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:  # kill the client and its workers (its own session)
            os.killpg(proc.pid, signal.SIGKILL)
        first_out = proc.stdout.read()
        proc.wait(30)
        proc.stdout.close()
    n_first = len(_arch_rows(store))
    assert n_first >= 2, first_out
    out, _ = (proc := _collect(store)).communicate(timeout=180)
    assert proc.returncode == 0, out
    assert f"skipped (already in store) {n_first}" in out
    rows = _arch_rows(store)
    archs, _ = _collect_archs(SPACE, 5, "balanced", 5, 0)
    counts = rows["arch_key"].value_counts()
    assert sorted(counts.index) == sorted(arch_key(a) for a in archs)
    assert (counts == 1).all()
