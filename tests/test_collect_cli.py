"""``esm-sklearn collect``: resumable, Ctrl-C/kill safe collection into a store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from esm_sklearn import TorchLatencyOracle, get_space
from esm_sklearn.cli import _collect_archs, main
from esm_sklearn.spaces import arch_key
from esm_sklearn.store import LATENCY_COLUMNS, MeasurementStore

REPO = Path(__file__).resolve().parents[1]


def _args(store, n, *extra):
    return ["collect", "--space", "mobilenetv3", "--n", str(n), "--store", str(store),
            "--resolution", "32", "--runs", "3", "--warmup", "0", "--threads", "1",
            "--no-progress", *extra]


def _fake_timer(monkeypatch, interrupt_at=None):
    calls = []

    def fake(self, space, arch, dev):
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        calls.append(arch_key(arch))
        lat = 1.0 + sum(arch["depth"])
        return {"latency_ms": lat, "median_ms": lat, "min_ms": lat, "p90_ms": lat,
                "std_ms": 0.0, "runs": 3, "status": "ok", "error": None}

    monkeypatch.setattr(TorchLatencyOracle, "_time_arch", fake)
    return calls


def test_mixed_sampling_is_half_half_seeded_and_distinct():
    space = get_space("resnet")
    archs, labels = _collect_archs(space, 7, "mixed", 5, seed=4)
    assert labels == ["balanced", "random"] * 3 + ["balanced"]
    assert len({arch_key(a) for a in archs}) == 7
    assert _collect_archs(space, 7, "mixed", 5, seed=4) == (archs, labels)
    assert _collect_archs(space, 7, "mixed", 5, seed=5)[0] != archs
    balanced, labels = _collect_archs(space, 5, "balanced", 5, seed=4)
    assert labels == ["balanced"] * 5 and sorted(space.bin_index(balanced)) == [0, 1, 2, 3, 4]


def test_collect_prints_summary_and_exports(monkeypatch, tmp_path, capsys):
    _fake_timer(monkeypatch)
    store, csv, lut = tmp_path / "cpu.sqlite", tmp_path / "out" / "cpu.csv", tmp_path / "lut.csv"
    rc = main(_args(store, 4, "--strategy", "mixed", "--n-references", "2", "--check-every",
                    "2", "--export", str(csv), "--profile-blocks", str(lut)))
    out = capsys.readouterr().out
    assert rc == 0
    assert "measured 4, failed 0, skipped (already in store) 0" in out
    assert "s per timed arch" in out and "QC passed" in out and "ref 1: 0.00% (3 rounds)" in out
    table = pd.read_csv(csv)
    assert list(table.columns) == LATENCY_COLUMNS and len(table) == 4
    assert sorted(table["sampling"]) == ["balanced", "balanced", "random", "random"]
    refs = pd.read_csv(tmp_path / "out" / "cpu_references.csv")
    assert len(refs) == 6 and sorted(refs["round"].unique()) == [0, 1, 2]
    assert len(pd.read_csv(lut)) == 72  # every MobileNetV3 block, really timed

    rc = main(_args(store, 4, "--strategy", "mixed", "--n-references", "2"))
    assert rc == 0 and "measured 0, failed 0, skipped (already in store) 4" in capsys.readouterr().out


def test_collect_ctrl_c_keeps_measurements_and_resumes(monkeypatch, tmp_path, capsys):
    store = tmp_path / "cpu.sqlite"
    _fake_timer(monkeypatch, interrupt_at=3)
    assert main(_args(store, 6, "--n-references", "0")) == 130
    err = capsys.readouterr().err
    assert "interrupted: 3 architectures" in err and "run the same command again" in err
    calls = _fake_timer(monkeypatch)
    assert main(_args(store, 6, "--n-references", "0")) == 0
    assert "measured 3, failed 0, skipped (already in store) 3" in capsys.readouterr().out
    assert len(calls) == 3
    with MeasurementStore(store) as s:
        assert len(s.frame("arch")) == 6 and s.frame("arch")["arch_key"].is_unique


def test_collect_bad_input_is_an_error_message(tmp_path, capsys):
    assert main(_args(tmp_path / "s.sqlite", 2, "--device", "gpu")) == 2
    assert "device 'gpu'" in capsys.readouterr().err
    assert main(_args(tmp_path / "s.sqlite", 2, "--space", "nope")) == 2
    assert "unknown search space 'nope'" in capsys.readouterr().err


def _arch_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM measurements WHERE kind='arch'").fetchone()[0]
    except sqlite3.OperationalError:  # table not created yet
        return 0


def test_sigkill_mid_collection_then_rerun_loses_and_duplicates_nothing(tmp_path, capsys):
    n, store = 8, tmp_path / "runs" / "cpu.sqlite"
    argv = [*_args(store, n, "--strategy", "mixed"), "--runs", "10", "--n-references", "1",
            "--check-every", "3", "--max-retries", "0", "--seed", "3"]
    cmd = [sys.executable, "-m", "esm_sklearn.cli", *argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and _arch_rows(store) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the collection ended before it could be killed"
    done = _arch_rows(store)
    assert 2 <= done < n

    # The same command again (in this process, to save a second start-up).
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"skipped (already in store) {done}" in out and f"measured {n - done}," in out

    expected = {arch_key(a) for a in _collect_archs(get_space("mobilenetv3"), n, "mixed", 5, 3)[0]}
    with MeasurementStore(store) as s:
        rows = s.frame("arch")
        ok = rows[rows["status"] == "ok"]
        assert len(ok) == n and ok["arch_key"].nunique() == n  # no duplicate
        assert set(ok["arch_key"]) == expected  # no loss
        table = s.to_latency_table()
        assert len(table) == n and table["arch"].is_unique
        assert (table["sampling"] == "random").sum() == n // 2
        # The rerun timed the references anew in a new QC round.
        assert s.to_references_table()["round"].nunique() >= 3


def test_collect_requires_a_store(capsys):
    with pytest.raises(SystemExit):
        main(["collect", "--space", "mobilenetv3", "--n", "2"])
    assert "--store" in capsys.readouterr().err


# ------------------------------------- issue 9 item 3: two collects into one store at once
_CONCURRENT = r'''
import os, sys, time
from pathlib import Path
from esm_sklearn import TorchLatencyOracle
from esm_sklearn.spaces import arch_key

sync, log = Path(sys.argv[1]), Path(sys.argv[2])

def fake(self, space, arch, dev):
    mine = sync / f"ready{os.getpid()}"
    if not mine.exists():  # both processes start timing together
        mine.touch()
        deadline = time.monotonic() + 120
        while len(list(sync.glob("ready*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    with open(log, "a") as fh:
        fh.write(arch_key(arch) + "\n")
    time.sleep(0.05)
    lat = 1.0 + sum(arch["depth"])
    return {"latency_ms": lat, "median_ms": lat, "min_ms": lat, "p90_ms": lat,
            "std_ms": 0.0, "runs": 3, "status": "ok", "error": None}

TorchLatencyOracle._time_arch = fake
from esm_sklearn.cli import main
sys.exit(main(sys.argv[3:]))
'''


def test_two_concurrent_collects_then_a_third_time_each_arch_once(tmp_path, monkeypatch, capsys):
    n, store = 12, tmp_path / "shared.sqlite"
    argv = _args(store, n, "--n-references", "2", "--check-every", "4", "--seed", "1")
    script = tmp_path / "collect_fake.py"
    script.write_text(_CONCURRENT)
    sync = tmp_path / "sync"
    sync.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    logs = [tmp_path / f"timed{i}.txt" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(script), str(sync), str(log), *argv],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for log in logs]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "measured" in out and "QC passed" in out

    expected = {arch_key(a) for a in _collect_archs(get_space("mobilenetv3"), n, "balanced", 5, 1)[0]}
    with MeasurementStore(store) as s:
        rows = s.frame("arch")
        refs = s.frame("reference")
        ref_keys = set(refs["arch_key"])
        assert rows["arch_key"].is_unique and set(rows["arch_key"]) == expected
        assert sorted(rows["batch"].unique()) == sorted(refs["batch"].unique())
        assert refs["batch"].nunique() == 2  # each process its own run number
        table = s.to_references_table()
        assert not table.duplicated(["run", "ref_id", "round"]).any()
    timed = [k for log in logs for k in log.read_text().split() if k not in ref_keys]
    assert sorted(timed) == sorted(expected)  # no architecture timed twice

    # A third run of the same command works (no "more than one timing" error) and times nothing.
    calls = _fake_timer(monkeypatch)
    assert main([*argv, "--export", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert f"measured 0, failed 0, skipped (already in store) {n}" in out and not calls
    assert len(pd.read_csv(tmp_path / "t.csv")) == n
