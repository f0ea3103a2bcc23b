"""MeasurementStore: the durable, append-only record of every latency measurement.

Every measurement (an architecture, a reference architecture re-timed for
quality control, or a single block for a lookup table) is one row of the SQLite
table ``measurements``, committed before :meth:`MeasurementStore.add` returns,
so a crash, ``kill -9`` or Ctrl-C loses at most the model being timed. Rows are
never updated or deleted (triggers refuse it); a re-timed architecture simply
adds a newer row and the exports keep the last ``ok`` row per architecture and
setting. Failed measurements are kept with their error text.

Durability: the database runs in WAL journal mode. With ``synchronous="FULL"``
(the default) a committed row survives a power loss or OS crash; with
``"NORMAL"`` it survives the death of the process (``kill -9``) but the last
commits may be lost if the operating system itself crashes. One fsync per row
is negligible next to timing a model 150 times.

Two processes may write the same store: each connection waits up to
``timeout`` seconds for the write lock and retries when SQLite still reports
``database is locked``. A collection takes a run number of its own
(:meth:`MeasurementStore.begin_run`, allocated inside the write lock), writes it
in the ``batch`` column of its rows (the ``run`` of the exports, which scopes
quality-control rounds) and claims each architecture before timing it
(:meth:`MeasurementStore.claim`), so two concurrent collections of one setting
split the work instead of timing every architecture twice. ``INSERT OR
REPLACE`` is refused like ``UPDATE`` and ``DELETE`` (schema version 2; a
version-1 store is migrated when first opened for writing).

A store whose file cannot be written (read-only file or media) is opened
read-only: it can be read and exported, and :meth:`MeasurementStore.add` and
:meth:`MeasurementStore.begin_run` refuse with a message naming the file. A
pickled store carries only its path and settings and is opened on first use;
an in-memory store is pickled empty (see :meth:`MeasurementStore.__getstate__`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sqlite3
import threading
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._store_export import LATENCY_COLUMNS, REFERENCE_COLUMNS, ExportMixin
from ._store_runs import CLAIM_TIMEOUT, RunsMixin
from ._validation import plain
from .spaces import arch_key as _arch_key

__all__ = ["MeasurementStore", "setting_key", "SCHEMA_VERSION", "LATENCY_COLUMNS",
           "REFERENCE_COLUMNS", "CLAIM_TIMEOUT"]

SCHEMA_VERSION = 2
KINDS = ("arch", "reference", "block")
STATUSES = ("ok", "failed")


# name -> SQLite declaration; order is the column order of frame().
_COLUMNS: dict[str, str] = {
    "id": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "kind": "TEXT NOT NULL",
    "arch_key": "TEXT NOT NULL",
    "space": "TEXT",
    "setting_key": "TEXT NOT NULL",
    "device": "TEXT",
    "protocol": "TEXT",
    "sampling": "TEXT",
    "ref_id": "INTEGER",
    "qc_round": "INTEGER",
    "after_arch_id": "INTEGER",
    "latency_ms": "REAL",
    "median_ms": "REAL",
    "min_ms": "REAL",
    "p90_ms": "REAL",
    "std_ms": "REAL",
    "runs": "INTEGER",
    "status": "TEXT NOT NULL",
    "error": "TEXT",
    "batch": "INTEGER",
    "timestamp": "TEXT NOT NULL",
    "extra": "TEXT",
}
_FLOAT_FIELDS = ("latency_ms", "median_ms", "min_ms", "p90_ms", "std_ms")
_INT_FIELDS = ("ref_id", "qc_round", "after_arch_id", "runs", "batch")
_TEXT_FIELDS = ("space", "sampling", "error")
_JSON_FIELDS = ("device", "protocol", "extra")

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS measurements ("
    + ", ".join(f"{name} {decl}" for name, decl in _COLUMNS.items())
    + ")",
    "CREATE INDEX IF NOT EXISTS measurements_setting ON measurements (setting_key, kind)",
    "CREATE TRIGGER IF NOT EXISTS measurements_no_update BEFORE UPDATE ON measurements "
    "BEGIN SELECT RAISE(ABORT, 'measurements is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS measurements_no_delete BEFORE DELETE ON measurements "
    "BEGIN SELECT RAISE(ABORT, 'measurements is append-only'); END",
]
# Schema version 2: INSERT OR REPLACE deletes the old row without firing the delete
# trigger, so an insert reusing an existing id is refused; collection runs and claims.
_SCHEMA_V2 = [
    "CREATE TRIGGER IF NOT EXISTS measurements_no_replace BEFORE INSERT ON measurements "
    "WHEN NEW.id IS NOT NULL AND EXISTS (SELECT 1 FROM measurements WHERE id = NEW.id) "
    "BEGIN SELECT RAISE(ABORT, 'measurements is append-only: a row with this id exists'); END",
    "CREATE TABLE IF NOT EXISTS runs (run INTEGER PRIMARY KEY, setting_key TEXT, "
    "host TEXT, pid INTEGER, started TEXT NOT NULL, heartbeat REAL, ended TEXT, info TEXT)",
    "CREATE TABLE IF NOT EXISTS claims (setting_key TEXT NOT NULL, arch_key TEXT NOT NULL, "
    "run INTEGER NOT NULL, claimed REAL NOT NULL, PRIMARY KEY (setting_key, arch_key))",
]
_SCHEMA += _SCHEMA_V2


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def setting_key(device: dict, protocol: dict) -> str:
    """Key of a measurement setting: sha1 of the device description and protocol.

    Two measurements are comparable (and an architecture need not be timed
    again) only when both were taken under the same setting.

    Parameters
    ----------
    device : dict
        Device description, e.g. ``{"name": ..., "type": "cuda", "torch": ...,
        "cuda": ..., "threads": 16, "batch_size": 1, "resolution": 224}``.
    protocol : dict
        Timing protocol, e.g. ``{"warmup": 10, "runs": 150, "trim": 0.2}``.

    Returns
    -------
    str
        40 hexadecimal digits; the same for equal dicts whatever their key order.

    Examples
    --------
    >>> setting_key({"name": "cpu", "threads": 2}, {"runs": 10}) == setting_key(
    ...     {"threads": 2, "name": "cpu"}, {"runs": 10})
    True
    """
    for name, value in (("device", device), ("protocol", protocol)):
        if not isinstance(value, dict):
            raise ValueError(f"setting_key: {name} must be a dict, got {type(value).__name__}")
    payload = _canonical_json({"device": device, "protocol": protocol})
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()


# Connections inherited through fork() are kept referenced (never closed or
# garbage-collected in the child): closing them there could disturb the parent's.
_FORKED_CONNECTIONS: list = []


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


class _NotWritable(ValueError):
    """SQLite refused a write (read-only file, folder or media)."""


def _is_read_only_error(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "readonly" in msg or "read-only" in msg or "unable to open" in msg


class MeasurementStore(RunsMixin, ExportMixin):
    """Append-only SQLite record of latency measurements.

    Parameters
    ----------
    path : str or path-like, default ":memory:"
        SQLite file (created with its parent folders) or ``":memory:"``.
    timeout : float, default 30.0
        Seconds to wait for another process's write lock before failing.
    synchronous : {"FULL", "NORMAL"}, default "FULL"
        SQLite ``synchronous`` setting (see the module docstring).

    Examples
    --------
    >>> store = MeasurementStore()
    >>> key = setting_key({"name": "cpu"}, {"runs": 10})
    >>> store.add({"kind": "arch", "arch_key": '{"depth":[1]}', "setting_key": key,
    ...            "latency_ms": 1.5, "status": "ok"})
    1
    >>> sorted(store.measured_keys(key))
    ['{"depth":[1]}']
    >>> store.close()
    """

    def __init__(self, path: str | os.PathLike = ":memory:", timeout: float = 30.0,
                 synchronous: str = "FULL"):
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        if isinstance(timeout, bool) or not (isinstance(timeout, (int, float))
                                             and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {plain(timeout)}")
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"store path must be a str or path-like, got {type(path).__name__}")
        self.path = str(path) if str(path) == ":memory:" else os.fspath(path)
        self.timeout = float(timeout)
        self.synchronous = synchronous
        self._reset()
        self._open()

    def _reset(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._pid = None
        self._lock = threading.RLock()
        self._closed = False
        self._read_only: str | None = None  # why the store is read-only, else None

    # ------------------------------------------------------------ connection
    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:"

    @property
    def read_only(self) -> bool:
        """True when the file could only be opened for reading (read-only file or media)."""
        self._connection()
        return self._read_only is not None

    def _prepare_folder(self) -> Path:
        p = Path(self.path)
        if p.is_dir():
            raise ValueError(f"store path {self.path!r} is a directory, not a SQLite file")
        if p.exists():
            return p
        for parent in p.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise ValueError(
                        f"cannot create store {self.path!r}: {str(parent)!r} is a file, not a "
                        "folder")
                break
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create the folder of store {self.path!r}: "
                             f"{exc.strerror or exc}") from None
        return p

    def _open(self, image: bytes | None = None) -> None:
        if self.in_memory:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            if image is not None:
                conn.deserialize(image)
            self._attach(conn)
            return
        p = self._prepare_folder()
        exists = p.is_file()
        if exists and not os.access(p, os.W_OK):
            self._open_read_only(p, "the file is not writable")
            return
        if not exists and not os.access(p.parent, os.W_OK):
            raise ValueError(f"cannot create store {self.path!r}: its folder "
                             f"{str(p.parent)!r} is not writable")
        # check_same_thread=False: calls are serialised by self._lock instead, so an
        # oracle may time models in a worker thread.
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.OperationalError as exc:
            raise ValueError(f"cannot open store {self.path!r}: {exc}") from None
        try:
            self._attach(conn)
        except (sqlite3.OperationalError, _NotWritable) as exc:
            if not exists or not (isinstance(exc, _NotWritable) or _is_read_only_error(exc)):
                raise ValueError(f"cannot open store {self.path!r} for writing: {exc}") from None
            self._open_read_only(p, f"SQLite cannot write it: {exc}")

    def _open_read_only(self, p: Path, reason: str) -> None:
        uri = Path(os.path.abspath(p)).as_uri()
        last = None
        # immutable=1: on read-only media SQLite cannot even create the WAL index.
        for query in ("?mode=ro", "?mode=ro&immutable=1"):
            conn = sqlite3.connect(uri + query, uri=True, timeout=self.timeout,
                                   isolation_level=None, check_same_thread=False)
            try:
                self._read_only = reason
                self._attach(conn)
                return
            except (sqlite3.OperationalError, _NotWritable) as exc:
                last = exc
        self._read_only = None
        raise ValueError(f"cannot open store {self.path!r}, not even for reading: {last}")

    def _attach(self, conn: sqlite3.Connection) -> None:
        try:
            self._conn, self._pid = conn, os.getpid()
            self._init_schema()
        except BaseException:
            conn.close()
            self._conn = None
            raise

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self._closed:
                raise ValueError(f"MeasurementStore({self.path!r}) is closed")
            self._open()  # first use after unpickling
        if self._pid != os.getpid():
            # A connection must not cross a fork: open our own in the child.
            if self.in_memory:
                raise ValueError("an in-memory MeasurementStore cannot be shared with a "
                                 "forked process; give it a file path")
            _FORKED_CONNECTIONS.append(self._conn)
            self._conn = None
            self._open()
        return self._conn

    def _retry(self, fn):
        """Run ``fn()``, retrying while SQLite reports the database locked/busy."""
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                with self._lock:
                    return fn()
            except sqlite3.OperationalError as exc:
                if _is_read_only_error(exc):
                    raise _NotWritable(f"store {self.path!r} cannot be written: {exc}") from None
                if not _is_locked(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def _transaction(self, fn):
        """``fn(conn)`` inside one ``BEGIN IMMEDIATE`` transaction (the write lock)."""
        conn = self._connection()

        def run():
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return out
        return self._retry(run)

    def _check_writable(self, what: str) -> None:
        self._connection()
        if self._read_only is not None:
            raise ValueError(
                f"store {self.path!r} is read-only ({self._read_only}): it can be read and "
                f"exported, but cannot {what}; give a writable store path")

    def _init_schema(self) -> None:
        conn = self._conn
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and _is_read_only_error(exc):
                raise
            raise ValueError(
                f"{self.path!r} is not a MeasurementStore: not a SQLite database ({exc})"
            ) from None
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"{self.path!r} has store schema version {version}, newer than this "
                f"esm_sklearn supports ({SCHEMA_VERSION}); upgrade esm_sklearn"
            )
        tables -= {"sqlite_sequence", "runs", "claims"}
        if tables and "measurements" not in tables:
            raise ValueError(
                f"{self.path!r} is a SQLite database of something else (tables "
                f"{sorted(tables)}, no 'measurements' table); refusing to write into it"
            )
        if "measurements" in tables:
            cols = {r[1] for r in conn.execute("PRAGMA table_info(measurements)")}
            missing = [c for c in _COLUMNS if c not in cols]
            if missing:
                raise ValueError(
                    f"{self.path!r} has a 'measurements' table without the store's columns "
                    f"{missing}; it is not a MeasurementStore"
                )
        if self._read_only is not None:
            if "measurements" not in tables:
                raise ValueError(f"{self.path!r} is not a MeasurementStore (no 'measurements' "
                                 f"table) and is read-only ({self._read_only})")
            return
        if not self.in_memory:
            mode = self._retry(
                lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            if str(mode).lower() != "wal":
                raise ValueError(f"could not put {self.path!r} in WAL journal mode (got {mode})")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        if "measurements" not in tables or version < SCHEMA_VERSION:
            # Creates a new store, or migrates a version-1 one (IF NOT EXISTS everywhere).
            def create(conn):
                for stmt in _SCHEMA:
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._transaction(create)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                if self._pid == os.getpid():
                    self._conn.close()
                self._conn = None

    def __enter__(self) -> MeasurementStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"MeasurementStore({self.path!r})"

    # A store is a parameter of the oracle, so clone()/pickle must work.
    def __getstate__(self):
        """Path and settings only: unpickling opens nothing (the file is opened on first use).

        An in-memory store's rows live only in this process: they are not put
        in the pickle (the unpickled store is empty), with a warning when there
        are any. ``copy.deepcopy`` (used by ``sklearn.base.clone``) copies them.
        """
        if self.in_memory and self._conn is not None and self._pid == os.getpid():
            n_rows = len(self)
            if n_rows:
                warnings.warn(
                    f"pickling an in-memory MeasurementStore leaves out its {n_rows} row(s): "
                    "the unpickled store is empty; give the store a file path to keep the "
                    "measurements", UserWarning, stacklevel=2)
        return {"path": self.path, "timeout": self.timeout, "synchronous": self.synchronous}

    def __setstate__(self, state):
        self.path = state["path"]
        self.timeout = state["timeout"]
        self.synchronous = state["synchronous"]
        self._reset()

    def __deepcopy__(self, memo):
        new = type(self).__new__(type(self))
        new.__setstate__({"path": self.path, "timeout": self.timeout,
                          "synchronous": copy.deepcopy(self.synchronous, memo)})
        if self.in_memory and self._conn is not None and not self._closed:
            new._open(image=self._connection().serialize())
        return new

    # ---------------------------------------------------------------- writing
    def add(self, record: dict) -> int:
        """Append one measurement and commit it before returning.

        Parameters
        ----------
        record : dict
            Row fields (see ``ORACLE_CONTRACT.md``). Required: ``kind``
            ('arch', 'reference' or 'block'), ``arch_key`` (or ``arch``: a dict or
            JSON string, turned into its key), ``status`` ('ok' or 'failed'),
            and ``setting_key`` (or both ``device`` and ``protocol``, from which
            it is computed). An 'ok' row needs a positive finite ``latency_ms``;
            a 'failed' row needs an ``error`` text. ``device``, ``protocol`` and
            ``extra`` may be dicts (stored as JSON). ``timestamp`` defaults to now
            (ISO 8601, UTC).

        Returns
        -------
        int
            The row id (increasing in insertion order).
        """
        self._check_writable("record measurements")
        row = self._prepare(record)
        names = list(row)
        sql = (f"INSERT INTO measurements ({', '.join(names)}) "
               f"VALUES ({', '.join('?' * len(names))})")
        values = [row[n] for n in names]
        conn = self._connection()
        # isolation_level=None: the INSERT is its own transaction, committed on return.
        cur = self._retry(lambda: conn.execute(sql, values))
        return int(cur.lastrowid)

    def _prepare(self, record: dict) -> dict[str, Any]:
        if not isinstance(record, dict):
            raise ValueError(f"a store record must be a dict, got {type(record).__name__}")
        record = dict(record)
        arch = record.pop("arch", None)
        if arch is not None and record.get("arch_key") is None:
            try:
                record["arch_key"] = _arch_key(arch)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"record 'arch' is not a JSON architecture: {exc}") from None
        unknown = sorted(set(record) - set(_COLUMNS) - {"id"})
        if unknown:
            raise ValueError(f"unknown record fields {unknown}; allowed: {list(_COLUMNS)[1:]}")
        if record.get("id") is not None:
            raise ValueError("record field 'id' is assigned by the store; leave it out")
        record.pop("id", None)

        kind = record.get("kind")
        if kind not in KINDS:
            raise ValueError(f"record 'kind' must be one of {KINDS}, got {plain(kind)}")
        status = record.get("status")
        if status not in STATUSES:
            raise ValueError(f"record 'status' must be one of {STATUSES}, got {plain(status)}")
        key = record.get("arch_key")
        if isinstance(key, dict):
            key = _arch_key(key)
        if not isinstance(key, str) or not key:
            raise ValueError(f"record 'arch_key' must be a non-empty string, got {plain(key)}")
        record["arch_key"] = key
        if record.get("space") is None and key.startswith("{"):
            try:
                parsed = json.loads(key)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and isinstance(parsed.get("space"), str):
                record["space"] = parsed["space"]

        if record.get("setting_key") is None:
            if not (isinstance(record.get("device"), dict)
                    and isinstance(record.get("protocol"), dict)):
                raise ValueError("record needs 'setting_key', or 'device' and 'protocol' dicts "
                                 "to compute it from")
            record["setting_key"] = setting_key(record["device"], record["protocol"])
        if not isinstance(record["setting_key"], str) or not record["setting_key"]:
            raise ValueError(f"record 'setting_key' must be a non-empty string, "
                             f"got {record['setting_key']!r}")

        where = f"record for {kind} {key[:80]}"
        for name in _FLOAT_FIELDS:
            value = record.get(name)
            if value is None:
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: {name} must be a number, got {plain(value)}") from None
            record[name] = None if math.isnan(value) else value
            if record[name] is not None and not math.isfinite(value):
                raise ValueError(f"{where}: {name} must be finite, got {value}")
        for name in _INT_FIELDS:
            value = record.get(name)
            if value is None:
                continue
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{where}: {name} must be an integer, got {plain(value)}")
            record[name] = int(value)
        for name in _TEXT_FIELDS:
            value = record.get(name)
            if value is not None and not isinstance(value, str):
                record[name] = str(value)
        for name in _JSON_FIELDS:
            value = record.get(name)
            if value is None or isinstance(value, str):
                continue
            try:
                record[name] = _canonical_json(value)
            except TypeError as exc:
                raise ValueError(f"{where}: {name} is not JSON-serialisable: {exc}") from None

        if kind == "reference":
            missing = [n for n in ("ref_id", "qc_round") if record.get(n) is None]
            if missing:
                raise ValueError(f"{where}: a 'reference' row needs {missing}")
        if status == "ok":
            lat = record.get("latency_ms")
            if lat is None or lat <= 0:
                raise ValueError(f"{where}: an 'ok' row needs a positive latency_ms, got {plain(lat)}")
        elif not record.get("error"):
            raise ValueError(f"{where}: a 'failed' row needs the 'error' text")
        if record.get("timestamp") is None:
            record["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        else:
            record["timestamp"] = str(record["timestamp"])
        return {k: v for k, v in record.items() if v is not None}

    # ---------------------------------------------------------------- reading
    def __len__(self) -> int:
        """Number of rows of every kind and status."""
        conn = self._connection()
        return int(self._retry(
            lambda: conn.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]))

    def measured_keys(self, setting_key: str, kinds=("arch",),
                      statuses=("ok", "failed")) -> set[str]:
        """Keys already recorded under ``setting_key`` (for resuming a collection).

        Parameters
        ----------
        setting_key : str
            The device + protocol key (:func:`setting_key`).
        kinds : sequence of str, default ("arch",)
            Row kinds to consider.
        statuses : sequence of str, default ("ok", "failed")
            Statuses to consider: by default a failed model is not retried.

        Returns
        -------
        set of str
            ``arch_key`` values.
        """
        kinds, statuses = self._check_values("kinds", kinds, KINDS), \
            self._check_values("statuses", statuses, STATUSES)
        sql = (f"SELECT DISTINCT arch_key FROM measurements WHERE setting_key = ? "
               f"AND kind IN ({','.join('?' * len(kinds))}) "
               f"AND status IN ({','.join('?' * len(statuses))})")
        conn = self._connection()
        rows = self._retry(
            lambda: conn.execute(sql, [setting_key, *kinds, *statuses]).fetchall())
        return {r[0] for r in rows}

    @staticmethod
    def _check_values(name, values, allowed) -> list[str]:
        if isinstance(values, str):
            values = [values]
        values = list(values)
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {values}")
        return values

    def frame(self, kind: str | None = "arch", setting_key: str | None = None,
              status: str | None = None, latest: bool = False) -> pd.DataFrame:
        """Rows as a DataFrame, all columns, in insertion order.

        Parameters
        ----------
        kind : {"arch", "reference", "block"} or None, default "arch"
            Row kind; None for all kinds.
        setting_key : str, optional
            Only rows of this setting.
        status : {"ok", "failed"} or None, default None
            Only rows of this status; None shows every row, failed ones included.
        latest : bool, default False
            Keep only the last row per (kind, arch_key, setting_key), as the
            exports do for 'ok' architecture rows (not meaningful for
            references, which are re-timed on purpose).

        Returns
        -------
        pandas.DataFrame
            ``device``, ``protocol`` and ``extra`` stay JSON strings.
        """
        clauses, params = [], []
        if kind is not None:
            self._check_values("kind", [kind], KINDS)
            clauses.append("kind = ?")
            params.append(kind)
        if setting_key is not None:
            clauses.append("setting_key = ?")
            params.append(setting_key)
        if status is not None:
            self._check_values("status", [status], STATUSES)
            clauses.append("status = ?")
            params.append(status)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM measurements{where} ORDER BY id"
        conn = self._connection()
        rows = self._retry(lambda: conn.execute(sql, params).fetchall())
        df = pd.DataFrame.from_records(rows, columns=list(_COLUMNS))
        for name in ("id", *_INT_FIELDS):
            df[name] = df[name].astype("Int64")
        for name in _FLOAT_FIELDS:
            df[name] = df[name].astype("float64")
        for name in ("kind", "arch_key", "space", "setting_key", "device", "protocol",
                     "sampling", "status", "error", "timestamp", "extra"):
            col = df[name].astype(object)
            df[name] = col.where(col.notna(), None)
        if latest:
            df = df.drop_duplicates(["kind", "arch_key", "setting_key"], keep="last")
        return df.reset_index(drop=True)
