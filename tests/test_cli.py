"""``esm-sklearn fit``, ``predict`` and ``evaluate``.

Replays use the bundled ``h200_resnet_b32`` table (130 architectures) with a
ridge regressor, so every fit takes well under a second; the device fit times
tiny MobileNetV3 models (resolution 32, a few runs).
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from esm_sklearn import ActiveLatencyEstimator, TorchLatencyOracle
from esm_sklearn.cli import main
from esm_sklearn.datasets import load_bundled
from esm_sklearn.metrics import binwise_accuracy, latency_accuracy
from esm_sklearn.spaces import arch_key
from esm_sklearn.store import MeasurementStore

REPO = Path(__file__).resolve().parents[1]
TABLE = "h200_resnet_b32"


def _env():
    return {**os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A predictor fit by `esm-sklearn fit` in replay mode, and what it printed."""
    out = tmp_path_factory.mktemp("fit") / "sub" / "predictor.joblib"
    buf = io.StringIO()
    stdout, sys.stdout = sys.stdout, buf
    try:
        rc = main(["fit", "--table", TABLE, "--regressor", "ridge", "--acc-threshold", "0.93",
                   "--out", str(out), "--no-progress"])
    finally:
        sys.stdout = stdout
    assert rc == 0
    return out, buf.getvalue()


def _jsonl(path, archs):
    path.write_text("".join(json.dumps(a) + "\n" for a in archs))
    return path


def test_fit_replay_saves_the_estimator_and_prints_its_run(fitted):
    path, out = fitted
    est = joblib.load(path)
    assert isinstance(est, ActiveLatencyEstimator)
    table = load_bundled(TABLE)
    # 130 rows are too few for the paper's 200/300/100: the sizes are scaled to the table.
    assert (est.n_test_, est.n_initial_, est.n_step_) == (26, 52, 13)
    assert "scaled down" in out
    assert len(est.X_train_) + len(est.X_test_) <= len(table.data)
    assert not {arch_key(a) for a in est.X_train_} & {arch_key(a) for a in est.X_test_}
    # One history line per training round, and the final state as the model has it.
    lines = out.splitlines()
    start = lines.index("history (accuracy on the held-out test set):") + 2
    assert [int(line.split()[0]) for line in lines[start : start + len(est.history_)]] == list(
        est.history_["iteration"]
    )
    assert f"({est.termination_condition_}) after {est.n_iter_} extension(s)" in out
    bins = binwise_accuracy(est.y_test_, est.predict(est.X_test_), est.X_test_, n_bins=5)
    for row in bins.itertuples():
        assert f"{100 * row.accuracy:5.1f}%" in out
    acc = latency_accuracy(est.y_test_, est.predict(est.X_test_))
    assert f"all bins: accuracy (1 - MAPE) {100 * acc:.1f}%" in out
    assert f"saved -> {path}" in out


def test_fit_replay_is_seeded(tmp_path, capsys, fitted):
    args = ["fit", "--table", TABLE, "--regressor", "ridge", "--acc-threshold", "0.93",
            "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a.joblib")]) == 0
    assert main([*args, "--out", str(tmp_path / "b.joblib"), "--seed", "1"]) == 0
    capsys.readouterr()
    same, other = joblib.load(tmp_path / "a.joblib"), joblib.load(tmp_path / "b.joblib")
    first = joblib.load(fitted[0])
    assert [arch_key(a) for a in same.X_train_] == [arch_key(a) for a in first.X_train_]
    assert [arch_key(a) for a in other.X_test_] != [arch_key(a) for a in first.X_test_]


def test_predict_plain_csv_and_stdin(fitted, tmp_path, capsys, monkeypatch):
    path, _ = fitted
    est = joblib.load(path)
    archs = load_bundled(TABLE).data[:7]
    expected = est.predict(archs)
    src = _jsonl(tmp_path / "archs.jsonl", archs)
    src.write_text(src.read_text().replace("\n", "\n\n", 1))  # a blank line is skipped

    assert main(["predict", "--model", str(path), str(src)]) == 0
    got = [float(v) for v in capsys.readouterr().out.split()]
    np.testing.assert_allclose(got, expected, rtol=1e-5)

    out_csv = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(path), "--csv", "--out", str(out_csv), str(src)]) == 0
    with out_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [json.loads(r["arch"]) for r in rows] == archs
    np.testing.assert_allclose([float(r["latency_ms"]) for r in rows], expected, rtol=1e-5)

    monkeypatch.setattr(sys, "stdin", io.StringIO(src.read_text()))
    assert main(["predict", "--model", str(path), "-"]) == 0
    np.testing.assert_allclose([float(v) for v in capsys.readouterr().out.split()], expected,
                               rtol=1e-5)


def test_predict_in_a_fresh_process_from_stdin(fitted):
    path, _ = fitted
    archs = load_bundled(TABLE).data[-4:]
    proc = subprocess.run(
        [sys.executable, "-m", "esm_sklearn.cli", "predict", "--model", str(path), "-"],
        input="".join(json.dumps(a) + "\n" for a in archs), capture_output=True, text=True,
        env=_env(), timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose([float(v) for v in proc.stdout.split()],
                               joblib.load(path).predict(archs), rtol=1e-5)


def test_evaluate_scores_and_separates_training_rows(fitted, tmp_path, capsys):
    path, _ = fitted
    est = joblib.load(path)
    table = load_bundled(TABLE)
    pred_csv = tmp_path / "pred.csv"
    assert main(["evaluate", "--model", str(path), "--table", TABLE,
                 "--predictions", str(pred_csv)]) == 0
    out = capsys.readouterr().out
    acc = latency_accuracy(table.target, est.predict(table.data))
    assert f"all rows:  accuracy (1 - MAPE) {100 * acc:.1f}%" in out
    assert f"{len(est.X_train_)} of these architectures were in the model's training set" in out
    train = {arch_key(a) for a in est.X_train_}
    unseen = [i for i, a in enumerate(table.data) if arch_key(a) not in train]
    acc_unseen = latency_accuracy(table.target[unseen], est.predict([table.data[i] for i in unseen]))
    assert f"the other {len(unseen)}: accuracy (1 - MAPE) {100 * acc_unseen:.1f}%" in out
    assert "Kendall tau" in out and "per-bin accuracy (the architectures not trained on)" in out
    written = pd.read_csv(pred_csv)
    assert [json.loads(a) for a in written["arch"]] == table.data
    np.testing.assert_allclose(written["predicted_ms"], est.predict(table.data), rtol=1e-6)
    assert written["in_training_set"].sum() == len(est.X_train_)


def test_evaluate_a_csv_path_and_a_plain_pipeline(tmp_path, capsys):
    from esm_sklearn.datasets import bundled_path
    from esm_sklearn.predictors import make_latency_pipeline

    table = load_bundled(TABLE)
    model = make_latency_pipeline(regressor="ridge", space="resnet").fit(table.data, table.target)
    joblib.dump(model, tmp_path / "pipe.joblib")
    assert main(["evaluate", "--model", str(tmp_path / "pipe.joblib"),
                 "--table", str(bundled_path(TABLE)), "--n-bins", "3"]) == 0
    out = capsys.readouterr().out
    assert "training set" not in out  # a plain pipeline does not say what it was trained on
    assert len([ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]) == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "--table", "nope"], "neither a CSV file nor a bundled table"),
        (["fit", "--table", TABLE, "--store", "x.sqlite"], "--store only apply"),
        (["fit", "--table", TABLE, "--runs", "3"], "--runs only apply"),
        (["fit", "--table", TABLE, "--space", "densenet"], "does not match"),
        (["fit"], "give --space"),
        (["fit", "--help-data", "."], "needs --help-target-device"),
        (["fit", "--help-table", "."], "needs --help-target-device"),  # the old spelling
        (["fit", "--space", "resnet", "--help-target-device", "pixel3"], "does not match"),
        (["fit", "--table", TABLE, "--acc-threshold", "95"], "--acc-threshold must be a fraction"),
        (["fit", "--table", TABLE, "--space", "nope"], "unknown search space"),
        (["evaluate", "--model", "missing.joblib", "--table", TABLE], "model file not found"),
    ],
)
def test_fit_and_evaluate_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--no-progress"] if argv[0] == "fit" else argv) == 2
    err = capsys.readouterr().err
    assert f"esm-sklearn {argv[0]}: error:" in err and message in err


def test_evaluate_rejects_another_space_and_non_models(fitted, tmp_path, capsys):
    path, _ = fitted
    assert main(["evaluate", "--model", str(path), "--table", "h200_densenet_b1"]) == 2
    assert "space 'resnet', the table holds 'densenet'" in capsys.readouterr().err
    junk = tmp_path / "junk.joblib"
    junk.write_text("not a pickle")
    assert main(["evaluate", "--model", str(junk), "--table", TABLE]) == 2
    assert "not a model saved with joblib" in capsys.readouterr().err
    joblib.dump({"a": 1}, junk)
    assert main(["predict", "--model", str(junk), "-"]) == 2
    assert "not a predictor" in capsys.readouterr().err


@pytest.mark.parametrize(
    "second_line, message",
    [
        ("{not json", "line 2: not valid JSON"),
        ("[1, 2]", "line 2: expected an architecture (a JSON object), got list"),
        ('{"space": "resnet", "depth": [1, 1, 1, 9]}', "line 2: resnet"),
        ('{"space": "densenet", "depth": [1, 1, 1, 1, 1], "kernel_size": [3, 3, 3, 3, 3]}',
         "line 2:"),
    ],
)
def test_predict_names_the_bad_line(fitted, tmp_path, capsys, second_line, message):
    path, _ = fitted
    src = tmp_path / "archs.jsonl"
    src.write_text(json.dumps(load_bundled(TABLE).data[0]) + "\n" + second_line + "\n")
    assert main(["predict", "--model", str(path), str(src)]) == 2
    err = capsys.readouterr().err
    assert f"esm-sklearn predict: error: {src} {message}" in err


def test_predict_empty_and_missing_input(fitted, tmp_path, capsys):
    path, _ = fitted
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert main(["predict", "--model", str(path), str(tmp_path / "empty.jsonl")]) == 2
    assert "no architecture in it" in capsys.readouterr().err
    assert main(["predict", "--model", str(path), str(tmp_path / "none.jsonl")]) == 2
    assert "architecture file not found" in capsys.readouterr().err


# ------------------------------------------------------------ device mode
def _device_args(store, out):
    return ["fit", "--space", "mobilenetv3", "--device", "cpu", "--store", str(store),
            "--out", str(out), "--resolution", "32", "--runs", "10", "--warmup", "0",
            "--threads", "1", "--n-references", "0", "--n-test", "5", "--n-initial", "10",
            "--n-step", "5", "--max-iter", "1", "--acc-threshold", "0.9999",
            "--regressor", "ridge", "--seed", "2", "--no-progress"]


def _stored_arch_keys(path: Path) -> list[str]:
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return [r[0] for r in conn.execute(
                "SELECT arch_key FROM measurements WHERE kind='arch' ORDER BY id")]
    except sqlite3.OperationalError:  # not created yet
        return []


def _spy_timer(monkeypatch, interrupt_after=None):
    """Record every architecture the oracle times, with a fake timer (latency from the
    architecture); optionally Ctrl-C after some."""
    timed = []

    def fake(self, space, arch, dev):
        if interrupt_after is not None and len(timed) == interrupt_after:
            raise KeyboardInterrupt
        timed.append(arch_key(arch))
        lat = 1.0 + sum(arch["depth"]) + 0.1 * sum(map(sum, arch["kernel_size"]))
        return {"latency_ms": lat, "median_ms": lat, "min_ms": lat, "p90_ms": lat,
                "std_ms": 0.0, "runs": 3, "status": "ok", "error": None}

    monkeypatch.setattr(TorchLatencyOracle, "_time_arch", fake)
    return timed


def test_device_fit_ctrl_c_then_rerun_resumes(tmp_path, capsys, monkeypatch):
    store, out = tmp_path / "cpu.sqlite", tmp_path / "p.joblib"
    _spy_timer(monkeypatch, interrupt_after=3)
    assert main(_device_args(store, out)) == 130
    assert "interrupted: the 3 architecture(s) measured in this session are safely in" in (
        capsys.readouterr().err)
    assert not out.exists()
    before = _stored_arch_keys(store)
    timed = _spy_timer(monkeypatch)
    assert main(_device_args(store, out)) == 0
    assert not set(timed) & set(before)
    keys = _stored_arch_keys(store)
    assert len(keys) == len(set(keys)) == 3 + len(timed)
    assert f"{len(timed)} new measurement(s) this session" in capsys.readouterr().out


def test_device_fit_killed_then_rerun_measures_only_new_archs(tmp_path, capsys, monkeypatch):
    store, out = tmp_path / "runs" / "cpu.sqlite", tmp_path / "p.joblib"
    argv = _device_args(store, out)
    proc = subprocess.Popen([sys.executable, "-m", "esm_sklearn.cli", *argv], cwd=tmp_path,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and len(_stored_arch_keys(store)) < 2 and (
                time.monotonic() < deadline):
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the fit ended before it could be killed"
    before = _stored_arch_keys(store)
    assert len(before) >= 2 and not out.exists()

    timed = _spy_timer(monkeypatch)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{len(timed)} new measurement(s) this session" in printed
    assert timed and not set(timed) & set(before)  # nothing measured twice
    est = joblib.load(out)
    used = {arch_key(a) for a in est.X_train_ + est.X_test_ + est.X_failed_}
    with MeasurementStore(store) as s:
        rows = s.frame("arch")
        assert rows["setting_key"].nunique() == 1
        assert rows["arch_key"].is_unique  # no duplicate arch row for the setting
        assert set(rows["arch_key"]) == used == set(before) | set(timed)
    assert len(est.X_test_) == 5 and len(est.history_) == 2
