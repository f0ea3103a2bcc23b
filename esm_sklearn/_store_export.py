"""Exports of a :class:`~esm_sklearn.store.MeasurementStore` in the shared H200 CSV format."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

__all__ = ["LATENCY_COLUMNS", "REFERENCE_COLUMNS", "ExportMixin"]

# Columns of the shared H200 CSV format (shared/datasets/h200/README.md).
LATENCY_COLUMNS = ["run", "order", "space", "sampling", "batch_size", "resolution",
                   "total_depth", "latency_ms", "median_ms", "min_ms", "p90_ms", "std_ms",
                   "runs", "arch"]
REFERENCE_COLUMNS = ["run", "space", "ref_id", "round", "after_arch_id", "batch_size",
                     "latency_ms", "median_ms", "std_ms", "runs"]
_FLOAT_COLUMNS = ("latency_ms", "median_ms", "min_ms", "p90_ms", "std_ms")


class ExportMixin:
    """Latency and reference tables (and their CSV files) from the store's rows."""

    def _single_setting(self, df: pd.DataFrame, setting_key: str | None, what: str) -> None:
        keys = df["setting_key"].unique()
        if setting_key is None and len(keys) > 1:
            raise ValueError(
                f"the store holds {what} of {len(keys)} settings {sorted(keys)}; pass "
                f"setting_key= to export one of them (latencies of different devices or "
                f"protocols must not be mixed in one table)"
            )

    def to_latency_table(self, setting_key: str | None = None) -> pd.DataFrame:
        """'ok' architecture rows in the shared H200 CSV format.

        The last 'ok' row per (arch_key, setting_key) is kept. ``run`` is the
        collection ``batch`` (1 when not given), ``order`` the store row id (the
        scale of ``after_arch_id`` in :meth:`to_references_table`, which is what
        :func:`esm_sklearn.quality.drift_correct` needs), ``batch_size`` and
        ``resolution`` come from the device description, ``total_depth`` is the
        sum of the arch's ``depth``.

        Parameters
        ----------
        setting_key : str, optional
            Required when the store holds more than one setting.

        Returns
        -------
        pandas.DataFrame
            Columns ``run, order, space, sampling, batch_size, resolution,
            total_depth, latency_ms, median_ms, min_ms, p90_ms, std_ms, runs, arch``.
        """
        df = self.frame("arch", setting_key=setting_key, status="ok", latest=True)
        self._single_setting(df, setting_key, "architecture rows")
        out = pd.DataFrame(index=df.index)
        devices = [json.loads(d) if isinstance(d, str) else {} for d in df["device"]]
        archs = [json.loads(k) for k in df["arch_key"]]
        out["run"] = df["batch"].fillna(1).astype("int64")
        out["order"] = df["id"].astype("int64")
        out["space"] = [s if isinstance(s, str) else a.get("space")
                        for s, a in zip(df["space"], archs, strict=True)]
        out["sampling"] = df["sampling"]
        out["batch_size"] = pd.array([d.get("batch_size") for d in devices], dtype="Int64")
        out["resolution"] = pd.array(
            [d.get("resolution") if d.get("resolution") is not None else a.get("resolution")
             for d, a in zip(devices, archs, strict=True)], dtype="Int64")
        out["total_depth"] = pd.array(
            [int(sum(a["depth"])) if isinstance(a.get("depth"), list) else None
             for a in archs], dtype="Int64")
        for name in _FLOAT_COLUMNS:
            out[name] = df[name]
        out["runs"] = df["runs"]
        out["arch"] = df["arch_key"]
        return out[LATENCY_COLUMNS].reset_index(drop=True)

    def to_references_table(self, setting_key: str | None = None) -> pd.DataFrame:
        """'ok' reference rows in the H200 ``*_references.csv`` format.

        ``run`` is the collection ``batch``, ``round`` the QC round and
        ``after_arch_id`` the store id of the last architecture row timed before
        the round (-1 at the start). Failed reference timings are left out.

        Returns
        -------
        pandas.DataFrame
            Columns ``run, space, ref_id, round, after_arch_id, batch_size,
            latency_ms, median_ms, std_ms, runs``.
        """
        df = self.frame("reference", setting_key=setting_key, status="ok")
        self._single_setting(df, setting_key, "reference rows")
        devices = [json.loads(d) if isinstance(d, str) else {} for d in df["device"]]
        out = pd.DataFrame(index=df.index)
        out["run"] = df["batch"].fillna(1).astype("int64")
        out["space"] = df["space"]
        out["ref_id"] = df["ref_id"]
        out["round"] = df["qc_round"]
        out["after_arch_id"] = df["after_arch_id"].fillna(-1).astype("int64")
        out["batch_size"] = pd.array([d.get("batch_size") for d in devices], dtype="Int64")
        for name in ("latency_ms", "median_ms", "std_ms", "runs"):
            out[name] = df[name]
        return out[REFERENCE_COLUMNS].reset_index(drop=True)

    def export_csv(self, path: str | os.PathLike, setting_key: str | None = None) -> None:
        """Write :meth:`to_latency_table` to ``path`` and the references beside it.

        The references go to ``<stem>_references.csv`` in the same folder
        (header only when there are none). Each file is written to a temporary
        name and renamed, so a crash never leaves half a CSV.
        """
        path = Path(path)
        if path.suffix.lower() != ".csv":
            raise ValueError(f"export path {str(path)!r} must end in .csv")
        table = self.to_latency_table(setting_key)
        refs = self.to_references_table(setting_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        for frame, target in ((table, path),
                              (refs, path.with_name(path.stem + "_references.csv"))):
            tmp = target.with_name(target.name + f".tmp{os.getpid()}")
            frame.to_csv(tmp, index=False)
            os.replace(tmp, target)
