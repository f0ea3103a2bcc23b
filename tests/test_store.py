"""MeasurementStore: durability, resume, concurrency, exports, bad files."""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from esm_sklearn import MeasurementStore
from esm_sklearn.store import LATENCY_COLUMNS, REFERENCE_COLUMNS, SCHEMA_VERSION, setting_key

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
H200 = SHARED / "datasets" / "h200"

DEVICE = {"name": "test-cpu", "type": "cpu", "torch": "x", "cuda": None, "threads": 1,
          "batch_size": 1, "resolution": 64}
PROTOCOL = {"warmup": 2, "runs": 10, "trim": 0.2}
KEY = setting_key(DEVICE, PROTOCOL)

needs_fork = pytest.mark.skipif(
    sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods(),
    reason="uses the fork start method and SIGKILL",
)


def _arch(i: int) -> dict:
    return {"space": "resnet", "depth": [1, 1, 1, 1],
            "kernel_size": [[3], [5], [7], [3 + 2 * (i % 3)]],
            "expand_ratio": [[0.5], [1.0], [0.5], [1.0]], "tag": i}


def _arch_row(i: int, latency: float | None = None, **kw) -> dict:
    row = {"kind": "arch", "arch": _arch(i), "setting_key": KEY, "device": DEVICE,
           "protocol": PROTOCOL, "sampling": "random", "latency_ms": latency or 1.0 + i,
           "median_ms": 1.0 + i, "min_ms": 0.5 + i, "p90_ms": 1.5 + i, "std_ms": 0.1,
           "runs": 10, "status": "ok", "batch": 1}
    row.update(kw)
    return row


def _ref_row(ref_id: int, rnd: int, after: int, latency: float) -> dict:
    return {"kind": "reference", "arch": _arch(100 + ref_id), "setting_key": KEY,
            "device": DEVICE, "protocol": PROTOCOL, "ref_id": ref_id, "qc_round": rnd,
            "after_arch_id": after, "latency_ms": latency, "median_ms": latency,
            "std_ms": 0.01, "runs": 10, "status": "ok", "batch": 1}


def test_add_frame_and_reopen(tmp_path):
    path = tmp_path / "sub" / "store.db"  # parent folder is created
    with MeasurementStore(path) as store:
        ids = [store.add(_arch_row(i)) for i in range(3)]
        assert ids == sorted(ids) and len(set(ids)) == 3
        assert len(store) == 3
    with MeasurementStore(path) as store:
        df = store.frame()
        assert list(df["id"]) == ids
        assert list(df["latency_ms"]) == [1.0, 2.0, 3.0]
        assert json.loads(df["device"].iloc[0]) == DEVICE
        assert json.loads(df["protocol"].iloc[0]) == PROTOCOL
        assert df["space"].iloc[0] == "resnet"  # taken from the arch
        assert json.loads(df["arch_key"].iloc[1]) == _arch(1)
        assert (df["setting_key"] == KEY).all()
        assert df["timestamp"].str.endswith("+00:00").all()
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()


def test_setting_key_is_order_independent_and_distinct():
    assert setting_key(dict(reversed(DEVICE.items())), PROTOCOL) == KEY
    assert setting_key({**DEVICE, "batch_size": 32}, PROTOCOL) != KEY
    assert setting_key(DEVICE, {**PROTOCOL, "runs": 150}) != KEY
    with pytest.raises(ValueError, match="device"):
        setting_key("cpu", PROTOCOL)


def test_setting_key_computed_from_device_and_protocol():
    with MeasurementStore() as store:
        row = _arch_row(0)
        del row["setting_key"]
        store.add(row)
        assert store.frame()["setting_key"].iloc[0] == KEY


def test_measured_keys_resume(tmp_path):
    """An interrupted collection re-run measures only what is missing."""
    path = tmp_path / "resume.db"
    archs = [_arch(i) for i in range(6)]
    timed = []

    def collect(store, crash_after=None):
        done = store.measured_keys(KEY)
        for i, arch in enumerate(archs):
            key = json.dumps(arch, sort_keys=True, separators=(",", ":"))
            if key in done:
                continue
            if crash_after is not None and len(timed) == crash_after:
                raise KeyboardInterrupt
            timed.append(i)
            store.add(_arch_row(i))

    with MeasurementStore(path) as store:
        with pytest.raises(KeyboardInterrupt):
            collect(store, crash_after=3)
    with MeasurementStore(path) as store:
        collect(store)
        assert timed == list(range(6))  # nothing timed twice
        assert len(store) == 6
        other = setting_key({**DEVICE, "batch_size": 8}, PROTOCOL)
        assert store.measured_keys(other) == set()


def test_failed_rows_kept_but_not_exported(tmp_path):
    with MeasurementStore() as store:
        store.add(_arch_row(0))
        store.add(_arch_row(1, status="failed", latency_ms=None, error="CUDA out of memory"))
        assert len(store.frame(status=None)) == 2
        failed = store.frame(status="failed")
        assert failed["error"].tolist() == ["CUDA out of memory"]
        assert pd.isna(failed["latency_ms"].iloc[0])
        assert len(store.to_latency_table()) == 1
        k1 = json.dumps(_arch(1), sort_keys=True, separators=(",", ":"))
        assert k1 in store.measured_keys(KEY)  # not retried by default
        assert k1 not in store.measured_keys(KEY, statuses=("ok",))


def test_retimed_arch_keeps_last_ok_row():
    with MeasurementStore() as store:
        store.add(_arch_row(0, latency=5.0))
        store.add(_arch_row(1))
        store.add(_arch_row(0, latency=7.0, batch=2))
        store.add(_arch_row(0, status="failed", latency_ms=None, error="boom", batch=3))
        assert len(store.frame()) == 4  # nothing is overwritten
        table = store.to_latency_table()
        assert len(table) == 2
        row = table[table["arch"].str.contains('"tag":0')].iloc[0]
        assert row["latency_ms"] == 7.0 and row["run"] == 2
        assert len(store.frame(latest=True)) == 2


def test_rows_cannot_be_updated_or_deleted(tmp_path):
    path = tmp_path / "s.db"
    with MeasurementStore(path) as store:
        store.add(_arch_row(0))
    conn = sqlite3.connect(path)
    for sql in ("UPDATE measurements SET latency_ms = 0", "DELETE FROM measurements"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    conn.close()


@pytest.mark.parametrize("change, match", [
    ({"kind": "model"}, "kind"),
    ({"status": "done"}, "status"),
    ({"latency_ms": None}, "positive latency_ms"),
    ({"latency_ms": -1.0}, "positive latency_ms"),
    ({"latency_ms": float("inf")}, "latency_ms must be finite"),
    ({"latency_ms": "fast"}, "latency_ms must be a number"),
    ({"runs": 1.5}, "runs must be an integer"),
    ({"status": "failed", "latency_ms": None}, "error"),
    ({"latecny_ms": 1.0}, "latecny_ms"),
    ({"id": 5}, "'id'"),
    ({"arch": None, "arch_key": ""}, "arch_key"),
    ({"setting_key": None, "device": None}, "setting_key"),
    ({"device": {"bad": object()}}, "device"),
])
def test_bad_records(change, match):
    with MeasurementStore() as store:
        row = _arch_row(0)
        row.update(change)
        with pytest.raises(ValueError, match=match):
            store.add(row)
        assert len(store) == 0


def test_reference_row_needs_ref_id_and_round():
    with MeasurementStore() as store:
        row = _ref_row(0, 0, -1, 2.0)
        del row["qc_round"]
        with pytest.raises(ValueError, match="qc_round"):
            store.add(row)


def test_bad_store_files(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("this is not a database\n" * 100)
    with pytest.raises(ValueError, match="notes.db.*not a SQLite database"):
        MeasurementStore(text)
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="foreign.db.*something else"):
        MeasurementStore(foreign)
    partial = tmp_path / "partial.db"
    conn = sqlite3.connect(partial)
    conn.execute("CREATE TABLE measurements (id INTEGER, latency_ms REAL)")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="partial.db.*without the store's columns"):
        MeasurementStore(partial)
    newer = tmp_path / "newer.db"
    MeasurementStore(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ValueError, match="newer.db.*schema version"):
        MeasurementStore(newer)
    with pytest.raises(ValueError, match="directory"):
        MeasurementStore(tmp_path)


def test_export_matches_h200_format(tmp_path):
    with MeasurementStore(tmp_path / "s.db") as store:
        for r in range(4):
            store.add(_ref_row(r, 0, -1, 2.0 + r))
        last = None
        for i in range(5):
            last = store.add(_arch_row(i))
        for r in range(4):
            store.add(_ref_row(r, 1, last, 2.2 + r))
        store.export_csv(tmp_path / "out" / "cpu_b1.csv")
    table = pd.read_csv(tmp_path / "out" / "cpu_b1.csv")
    refs = pd.read_csv(tmp_path / "out" / "cpu_b1_references.csv")
    assert list(table.columns) == LATENCY_COLUMNS
    assert list(refs.columns) == REFERENCE_COLUMNS
    if (H200 / "resnet_b1.csv").exists():
        assert LATENCY_COLUMNS == list(pd.read_csv(H200 / "resnet_b1.csv", nrows=0).columns)
        assert REFERENCE_COLUMNS == list(
            pd.read_csv(H200 / "resnet_b1_references.csv", nrows=0).columns)
    assert table["batch_size"].tolist() == [1] * 5
    assert table["resolution"].tolist() == [64] * 5
    assert table["total_depth"].tolist() == [4] * 5
    assert table["order"].is_monotonic_increasing
    assert [json.loads(a)["tag"] for a in table["arch"]] == list(range(5))
    assert sorted(refs["round"].unique()) == [0, 1]
    assert refs.loc[refs["round"] == 1, "after_arch_id"].eq(table["order"].max()).all()
    assert refs.loc[refs["round"] == 0, "after_arch_id"].eq(-1).all()


def test_export_readable_by_load_latency_table(tmp_path):
    datasets = pytest.importorskip("esm_sklearn.datasets")
    if not hasattr(datasets, "load_latency_table"):
        pytest.skip("esm_sklearn.datasets.load_latency_table not written yet")
    with MeasurementStore() as store:
        archs = get_resnet_archs(3)
        for i, arch in enumerate(archs):
            store.add({**_arch_row(i), "arch": arch, "latency_ms": 2.0 + i})
        store.export_csv(tmp_path / "t.csv")
    bunch = datasets.load_latency_table(tmp_path / "t.csv")
    assert list(bunch.target) == [2.0, 3.0, 4.0]
    assert [json.dumps(a, sort_keys=True) for a in bunch.data] == [
        json.dumps(a, sort_keys=True) for a in archs]


def get_resnet_archs(n):
    from esm_sklearn import get_space

    return get_space("resnet").sample(n, random_state=0)


def test_mixed_settings_need_a_setting_key():
    other = setting_key({**DEVICE, "batch_size": 32}, PROTOCOL)
    with MeasurementStore() as store:
        store.add(_arch_row(0))
        store.add(_arch_row(1, setting_key=other))
        with pytest.raises(ValueError, match="setting_key"):
            store.to_latency_table()
        assert len(store.to_latency_table(other)) == 1


def test_pickle_and_deepcopy(tmp_path):
    with MeasurementStore(tmp_path / "p.db") as store:
        store.add(_arch_row(0))
        clone = pickle.loads(pickle.dumps(store))
        clone.add(_arch_row(1))  # same file
        assert len(store) == 2
        clone.close()
    mem = MeasurementStore()
    mem.add(_arch_row(0))
    twin = copy.deepcopy(mem)
    twin.add(_arch_row(1))
    assert (len(mem), len(twin)) == (1, 2)
    mem.close()
    twin.close()
    with pytest.raises(ValueError, match="closed"):
        len(mem)


def _writer(path: str, writer: int, n: int) -> None:
    with MeasurementStore(path, timeout=60) as store:
        for i in range(n):
            store.add(_arch_row(i, latency=1000.0 * writer + i, extra={"writer": writer, "i": i}))


@needs_fork
def test_two_processes_append_concurrently(tmp_path):
    path = str(tmp_path / "shared.db")
    MeasurementStore(path).close()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, w, 200)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    with MeasurementStore(path) as store:
        df = store.frame()
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
    assert len(df) == 400 and df["id"].is_unique
    extra = pd.DataFrame([json.loads(e) for e in df["extra"]])
    for w in (1, 2):
        mine = df[extra["writer"] == w]
        assert extra.loc[extra["writer"] == w, "i"].tolist() == list(range(200))
        assert mine["latency_ms"].tolist() == [1000.0 * w + i for i in range(200)]


def _add_rows(store: MeasurementStore, start: int, n: int) -> None:
    for i in range(start, start + n):
        store.add(_arch_row(i))


@needs_fork
def test_store_object_used_in_forked_child_and_thread(tmp_path):
    """An oracle may hand its open store to a forked worker or a thread."""
    import threading

    with MeasurementStore(tmp_path / "f.db") as store:
        store.add(_arch_row(0))
        proc = multiprocessing.get_context("fork").Process(target=_add_rows,
                                                           args=(store, 1, 5))
        proc.start()
        proc.join(30)
        assert proc.exitcode == 0
        thread = threading.Thread(target=_add_rows, args=(store, 6, 5))
        thread.start()
        thread.join(30)
        store.add(_arch_row(11))  # the parent's connection still works
        tags = [json.loads(k)["tag"] for k in store.frame()["arch_key"]]
    assert tags == list(range(12))


def _endless_writer(path: str) -> None:
    with MeasurementStore(path, synchronous="NORMAL") as store:
        i = 0
        while True:
            store.add(_arch_row(i, latency=1.0 + i, extra={"i": i}))
            i += 1


@needs_fork
def test_kill_9_loses_no_committed_row(tmp_path):
    path = str(tmp_path / "killed.db")
    MeasurementStore(path).close()
    proc = multiprocessing.get_context("fork").Process(target=_endless_writer, args=(path,))
    proc.start()
    seen = 0
    with MeasurementStore(path) as reader:
        deadline = time.monotonic() + 20
        while seen < 50 and time.monotonic() < deadline:
            time.sleep(0.02)
            seen = len(reader)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    assert seen >= 50
    with MeasurementStore(path) as store:
        df = store.frame()
        store.add(_arch_row(0))  # still writable
    assert len(df) >= seen
    assert [json.loads(e)["i"] for e in df["extra"]] == list(range(len(df)))
    assert df["latency_ms"].tolist() == [1.0 + i for i in range(len(df))]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


# ------------------------------------------------- issue 9: nothing lost, nothing confusing
def _v1_store(path: Path) -> None:
    """A store as the first release wrote it (schema version 1, no insert trigger)."""
    from esm_sklearn.store import _COLUMNS

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE measurements ("
                 + ", ".join(f"{n} {d}" for n, d in _COLUMNS.items()) + ")")
    for verb in ("UPDATE", "DELETE"):
        conn.execute(f"CREATE TRIGGER measurements_no_{verb.lower()} BEFORE {verb} ON "
                     "measurements BEGIN SELECT RAISE(ABORT, 'measurements is append-only'); END")
    conn.execute("INSERT INTO measurements (kind, arch_key, setting_key, latency_ms, status, "
                 "timestamp) VALUES ('arch', 'a', 'k', 1.5, 'ok', 'then')")
    conn.execute("PRAGMA user_version=1")
    conn.close()


@pytest.mark.parametrize("sql", [
    "INSERT OR REPLACE INTO measurements (id, kind, arch_key, setting_key, latency_ms, status, "
    "timestamp) VALUES (1, 'arch', 'x', 'k', 9.0, 'ok', 'now')",
    "REPLACE INTO measurements (id, kind, arch_key, setting_key, latency_ms, status, timestamp) "
    "VALUES (1, 'arch', 'x', 'k', 9.0, 'ok', 'now')",
    "INSERT INTO measurements (id, kind, arch_key, setting_key, latency_ms, status, timestamp) "
    "VALUES (1, 'arch', 'x', 'k', 9.0, 'ok', 'now') ON CONFLICT(id) DO UPDATE SET latency_ms = 9",
])
@pytest.mark.parametrize("version", [1, SCHEMA_VERSION])
def test_insert_or_replace_cannot_replace_a_row(tmp_path, sql, version):
    path = tmp_path / "s.db"
    if version == 1:
        _v1_store(path)
        MeasurementStore(path).close()  # opening for writing migrates it
    else:
        with MeasurementStore(path) as store:
            store.add({"kind": "arch", "arch_key": "a", "setting_key": "k", "latency_ms": 1.5,
                       "status": "ok"})
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(sql)
    assert conn.execute("SELECT arch_key, latency_ms FROM measurements").fetchall() == [("a", 1.5)]
    conn.close()


def _allocate_runs(path: str, n: int, queue) -> None:
    with MeasurementStore(path, timeout=60) as store:
        queue.put([store.begin_run("k") for _ in range(n)])


@needs_fork
def test_run_numbers_are_unique_across_concurrent_processes(tmp_path):
    path = str(tmp_path / "runs.db")
    with MeasurementStore(path) as store:
        store.add(_arch_row(0, batch=None))  # an old row without a run counts as run 1
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_allocate_runs, args=(path, 15, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    runs = [r for _ in procs for r in queue.get(timeout=60)]
    for p in procs:
        p.join(60)
    assert sorted(runs) == list(range(2, 47))
    with MeasurementStore(path) as store:
        assert store.runs()["run"].tolist() == list(range(2, 47))


def test_claims_split_work_and_stale_claims_are_taken_over(tmp_path):
    with MeasurementStore(tmp_path / "c.db") as store:
        a, b = store.begin_run(KEY), store.begin_run(KEY)
        assert store.claim(KEY, "x", a) == "ok"
        assert store.claim(KEY, "x", a) == "ok"  # its own claim
        assert store.claim(KEY, "x", b) == "claimed"
        store.add({**_arch_row(0), "arch_key": "x"})
        assert store.claim(KEY, "x", b) == "measured"
        assert store.claim(KEY, "y", b) == "ok"
        store.end_run(b)  # b stopped (Ctrl-C) without timing y: its claim is stale
        assert store.claim(KEY, "y", a) == "ok"
        # A run whose process died (kill -9) holds no claim either.
        c = store.begin_run(KEY)
        store._conn.execute("UPDATE runs SET pid = ? WHERE run = ?", (2 ** 22 + 12345, c))
        assert store.claim(KEY, "z", c) == "ok"
        assert store.claim(KEY, "z", a) == "ok"


def test_unpickling_a_store_touches_no_file(tmp_path, monkeypatch):
    made = tmp_path / "made"
    made.mkdir()
    monkeypatch.chdir(made)
    store = MeasurementStore("sub/rel.db")
    store.add(_arch_row(0))
    blob = pickle.dumps(store)
    store.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    restored = pickle.loads(blob)
    assert list(elsewhere.iterdir()) == []  # nothing created by unpickling
    (elsewhere / "sub").write_text("a file where the store's folder would go")
    restored = pickle.loads(blob)  # does not fail either
    assert restored.path == "sub/rel.db"
    monkeypatch.chdir(made)
    assert len(restored) == 1  # opened on first use


def test_unpickling_an_oracle_with_a_store_touches_no_file(tmp_path, monkeypatch):
    from esm_sklearn import TorchLatencyOracle

    monkeypatch.chdir(tmp_path)
    oracle = TorchLatencyOracle(store=MeasurementStore("runs/cpu.sqlite"))
    blob = pickle.dumps(oracle)
    oracle.store.close()
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    restored = pickle.loads(blob)
    assert list(other.iterdir()) == [] and restored.store.path == "runs/cpu.sqlite"


def test_in_memory_store_is_pickled_empty_with_a_warning():
    mem = MeasurementStore()
    mem.add(_arch_row(0))
    with pytest.warns(UserWarning, match="leaves out its 1 row"):
        blob = pickle.dumps(mem)
    assert len(blob) < 500  # the rows are not in the pickle
    assert len(pickle.loads(blob)) == 0
    assert len(copy.deepcopy(mem)) == 1  # clone() still copies them
    empty = pickle.dumps(MeasurementStore())  # no rows: no warning (warnings are errors here)
    assert len(pickle.loads(empty)) == 0


# ------------------------------------------- issue 9 hardening: paths that cannot be written
def _chattr(flag: str, *paths) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


def _can_chattr(tmp_path) -> bool:
    probe = tmp_path / "probe"
    probe.write_text("x")
    try:
        _chattr("+i", probe)
    except (OSError, subprocess.CalledProcessError):
        return False
    _chattr("-i", probe)
    return True


def test_store_under_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ValueError, match="cannot create store .*'.*plain' is a file, not a folder"):
        MeasurementStore(tmp_path / "plain" / "deeper" / "s.db")


def test_read_only_store_is_readable_exportable_but_refuses_writes(tmp_path):
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        with MeasurementStore(folder / "s.db") as store:
            store.add(_arch_row(0))
        (folder / "s.db").chmod(0o444)
        folder.chmod(0o555)
        undo = [lambda: folder.chmod(0o755), lambda: (folder / "s.db").chmod(0o644)]
    elif _can_chattr(tmp_path):
        # "Read-only media": a clean copy of the file (no -wal/-shm), file and folder immutable.
        folder = tmp_path / "ro"
        folder.mkdir()
        with MeasurementStore(tmp_path / "s.db") as store:
            store.add(_arch_row(0))
        shutil.copy(tmp_path / "s.db", folder / "s.db")
        _chattr("+i", folder / "s.db", folder)
        undo = [lambda: _chattr("-i", folder / "s.db", folder)]
    else:
        pytest.skip("root without chattr: cannot make a read-only file")
    try:
        with MeasurementStore(folder / "s.db") as store:
            assert store.read_only and len(store) == 1
            store.export_csv(tmp_path / "out.csv")
            with pytest.raises(ValueError, match=r"s\.db' is read-only .*cannot record"):
                store.add(_arch_row(1))
            with pytest.raises(ValueError, match="read-only .*cannot begin a collection run"):
                store.begin_run(KEY)
        with pytest.raises(ValueError, match="cannot create store .*not writable"):
            MeasurementStore(folder / "new.db")
        assert sorted(p.name for p in folder.iterdir()) == ["s.db"]
    finally:
        for fn in undo:
            fn()
    assert len(pd.read_csv(tmp_path / "out.csv")) == 1


def test_unpickling_an_estimator_whose_oracle_has_a_store_touches_no_file(tmp_path, monkeypatch):
    from esm_sklearn import ActiveLatencyEstimator, TorchLatencyOracle

    monkeypatch.chdir(tmp_path)
    est = ActiveLatencyEstimator(oracle=TorchLatencyOracle(store=MeasurementStore("r/s.db")))
    blob = pickle.dumps(est)
    est.oracle.store.close()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    monkeypatch.chdir(fresh)
    assert pickle.loads(blob).oracle.store.path == "r/s.db"
    assert list(fresh.iterdir()) == []
