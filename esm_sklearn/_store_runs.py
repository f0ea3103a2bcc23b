"""Collection runs and claims of a :class:`~esm_sklearn.store.MeasurementStore`.

Two collections may write one store at once. Each takes a run number of its own
(:meth:`RunsMixin.begin_run`, allocated inside SQLite's write lock) and claims
an architecture right before timing it (:meth:`RunsMixin.claim`), so they split
the work instead of timing everything twice. A claim of a run that ended, of a
dead process on this host, or of a run on another host silent for
``CLAIM_TIMEOUT`` seconds is stale and taken over (a ``kill -9`` blocks nothing).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from datetime import datetime, timezone

import pandas as pd

__all__ = ["CLAIM_TIMEOUT", "RunsMixin"]

# A claim of a run on another host whose heartbeat is older than this is stale.
CLAIM_TIMEOUT = 3600.0


def _run_alive(host, pid, heartbeat, ended, now: float) -> bool:
    """Whether the run holding a claim may still be timing it."""
    if ended is not None or host is None:
        return False
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, OverflowError, ValueError):
            return True
        return True
    return heartbeat is not None and now - float(heartbeat) < CLAIM_TIMEOUT


class RunsMixin:
    """The ``runs`` and ``claims`` tables (schema version 2) of a MeasurementStore."""

    def begin_run(self, setting_key: str | None = None, info: dict | None = None) -> int:
        """Allocate a collection run number, unique in this store, and register the run.

        The number is taken inside the write lock, so two processes starting at
        once get different numbers; it follows every run and ``batch`` value
        already recorded (rows without one count as run 1). Call
        :meth:`end_run` when the collection stops.

        Parameters
        ----------
        setting_key : str, optional
            The setting the run measures.
        info : dict, optional
            Anything JSON-serialisable to keep with the run.

        Returns
        -------
        int

        Examples
        --------
        >>> from esm_sklearn.store import MeasurementStore
        >>> store = MeasurementStore()
        >>> store.begin_run(), store.begin_run()
        (1, 2)
        >>> store.end_run(2)
        """
        self._check_writable("begin a collection run")
        now = time.time()
        started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        info_text = None if info is None else json.dumps(info, sort_keys=True, default=str)

        def allocate(conn):
            top = conn.execute("SELECT MAX(run) FROM runs").fetchone()[0] or 0
            top_batch, n_null = conn.execute(
                "SELECT MAX(batch), COUNT(*) - COUNT(batch) FROM measurements").fetchone()
            run = max(top, top_batch or 0, 1 if n_null else 0) + 1
            conn.execute("INSERT INTO runs (run, setting_key, host, pid, started, heartbeat, "
                         "info) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (run, setting_key, socket.gethostname(), os.getpid(), started, now,
                          info_text))
            return run
        return int(self._transaction(allocate))

    def end_run(self, run: int) -> None:
        """Mark ``run`` finished and release its claims (idempotent)."""
        if self._read_only is not None or self._closed:
            return
        ended = datetime.now(timezone.utc).isoformat(timespec="milliseconds")

        def finish(conn):
            conn.execute("UPDATE runs SET ended = ? WHERE run = ? AND ended IS NULL",
                         (ended, int(run)))
            conn.execute("DELETE FROM claims WHERE run = ?", (int(run),))
        self._transaction(finish)

    def claim(self, setting_key: str, arch_key: str, run: int) -> str:
        """Claim an architecture for timing by ``run``, atomically.

        Returns
        -------
        {"ok", "measured", "claimed"}
            ``"measured"``: an architecture row of this setting exists (nothing
            to time); ``"claimed"``: another run that is still alive holds the
            claim (wait for its row); ``"ok"``: the claim is ``run``'s, time it.
            A claim of a finished run, of a dead process on this host, or of a
            run on another host silent for ``CLAIM_TIMEOUT`` seconds is stale
            and taken over.

        Examples
        --------
        >>> from esm_sklearn.store import MeasurementStore
        >>> store = MeasurementStore()
        >>> a, b = store.begin_run("k"), store.begin_run("k")
        >>> store.claim("k", "arch-1", a), store.claim("k", "arch-1", b)
        ('ok', 'claimed')
        >>> store.end_run(a)
        >>> store.claim("k", "arch-1", b)
        'ok'
        """
        self._check_writable("claim architectures")
        run = int(run)

        def take(conn):
            if conn.execute("SELECT 1 FROM measurements WHERE kind = 'arch' AND "
                            "setting_key = ? AND arch_key = ? LIMIT 1",
                            (setting_key, arch_key)).fetchone():
                return "measured"
            now = time.time()
            conn.execute("UPDATE runs SET heartbeat = ? WHERE run = ?", (now, run))
            holder = conn.execute(
                "SELECT c.run, r.host, r.pid, r.heartbeat, r.ended FROM claims c "
                "LEFT JOIN runs r ON r.run = c.run WHERE c.setting_key = ? AND c.arch_key = ?",
                (setting_key, arch_key)).fetchone()
            if holder is not None and holder[0] != run and _run_alive(*holder[1:], now=now):
                return "claimed"
            conn.execute("INSERT OR REPLACE INTO claims (setting_key, arch_key, run, claimed) "
                         "VALUES (?, ?, ?, ?)", (setting_key, arch_key, run, now))
            return "ok"
        return self._transaction(take)

    def runs(self) -> pd.DataFrame:
        """The collection runs (one row per :meth:`begin_run`), oldest first."""
        conn = self._connection()
        cols = ["run", "setting_key", "host", "pid", "started", "heartbeat", "ended", "info"]
        try:
            rows = self._retry(lambda: conn.execute(
                f"SELECT {', '.join(cols)} FROM runs ORDER BY run").fetchall())
        except sqlite3.OperationalError:  # a read-only version-1 store has no runs table
            rows = []
        return pd.DataFrame.from_records(rows, columns=cols)
