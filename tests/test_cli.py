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
        (["fit", "--table", TABLE, "--no-paired"], "--paired only apply"),
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


# ============================================ issue 9: nothing lost, nothing confusing
def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _no_numpy_repr(text: str) -> None:
    assert "np.float" not in text and "np.int" not in text and "array(" not in text, text
    assert "Traceback" not in text, text


# ---- item 1: --out never destroys a store, a table or any input
def test_fit_out_refuses_the_store_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "v.sqlite"
    with MeasurementStore(store) as s:
        s.add({"kind": "arch", "arch_key": "a", "setting_key": "k", "latency_ms": 1.0,
               "status": "ok"})
    timed = _spy_timer(monkeypatch)
    (tmp_path / "link.joblib").symlink_to(store)
    other = tmp_path / "other.sqlite"
    MeasurementStore(other).close()
    for out, message in [(store, "same file as --store"),
                         ("./sub/../v.sqlite", "same file as --store"),
                         (tmp_path / "link.joblib", "same file as --store"),
                         (other, "is a SQLite database")]:
        code, _, err = _run(_device_args(store, out), capsys)
        assert code == 2 and message in err, err
    assert timed == []
    with MeasurementStore(store) as s:  # every measurement still there
        assert len(s) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sub").exists()


def test_fit_out_refuses_inputs_and_foreign_files_but_replaces_a_model(tmp_path, capsys):
    csv_path = tmp_path / "table.csv"
    csv_path.write_bytes(bundled_path_of(TABLE).read_bytes())
    base = ["fit", "--regressor", "ridge", "--no-progress"]
    code, _, err = _run([*base, "--table", str(csv_path), "--out", str(csv_path)], capsys)
    assert code == 2 and "same file as --table" in err
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    code, _, err = _run([*base, "--table", TABLE, "--out", str(notes)], capsys)
    assert code == 2 and "not a model file (not a pickle)" in err
    assert notes.read_text() == "my notes"
    model = tmp_path / "m.joblib"
    assert _run([*base, "--table", TABLE, "--out", str(model)], capsys)[0] == 0
    first = model.stat().st_mtime_ns
    assert _run([*base, "--table", TABLE, "--out", str(model), "--seed", "3"], capsys)[0] == 0
    assert model.stat().st_mtime_ns >= first and joblib.load(model).random_state == 3
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # written atomically
    code, _, err = _run(["predict", "--model", str(model), "--out", str(model), "-"], capsys)
    assert code == 2 and "same file as --model" in err
    code, _, err = _run(["evaluate", "--model", str(model), "--table", TABLE, "--predictions",
                         str(model)], capsys)
    assert code == 2 and "same file as --model" in err


def bundled_path_of(name):
    from esm_sklearn.datasets import bundled_path

    return bundled_path(name)


# ---- item 6: a bad --device creates nothing
@pytest.mark.parametrize("device", ["gpu", "cuda:x/../../etc", "../up", "cpu:0:1"])
def test_bad_device_creates_no_file(tmp_path, capsys, monkeypatch, device):
    monkeypatch.chdir(tmp_path)
    argv = ["fit", "--space", "mobilenetv3", "--device", device, "--n-references", "0",
            "--no-progress"]
    code, _, err = _run(argv, capsys)
    assert code == 2 and "device" in err
    code, _, err = _run(["collect", "--space", "mobilenetv3", "--device", device, "--n", "2",
                         "--store", "s/x.sqlite", "--no-progress"], capsys)
    assert code == 2 and "device" in err
    assert list(tmp_path.iterdir()) == []


# ---- item 8: | head exits quietly
@pytest.mark.parametrize("command", ["sample", "predict"])
def test_closed_pipe_exits_quietly(fitted, tmp_path, command):
    prog = f"{sys.executable} -m esm_sklearn.cli"
    if command == "sample":
        cmd = f"{prog} sample --space resnet --n 3000 --seed 0 | head -1"
    else:
        src = _jsonl(tmp_path / "a.jsonl", load_bundled(TABLE).data * 30)
        cmd = f"{prog} predict --model {fitted[0]} --csv {src} | head -2"
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], env=_env(),
                          capture_output=True, text=True, timeout=300)
    # Nothing on stderr but predict's line saying what the model was fitted for.
    assert [line for line in proc.stderr.splitlines()
            if not line.startswith("model fitted for:")] == []
    assert proc.returncode in (0, 141)
    assert len(proc.stdout.splitlines()) in (1, 2)


# ---- item 9: messages and the QC options
def _qc_timer(monkeypatch, bad_round: int):
    """Fake timer: reference latencies jump by 50% in one QC round (then the batch is
    timed again and the next round passes)."""
    state = {"refs": 0}

    def fake(self, space, arch, dev):
        lat = 1.0 + sum(arch["depth"])
        key = arch_key(arch)
        refs = {arch_key(r) for r in self.reference_archs(space)}
        if key in refs:
            n_refs = len(refs)
            rnd = state["refs"] // n_refs
            state["refs"] += 1
            if rnd == bad_round:
                lat *= 1.5
        return {"latency_ms": lat, "median_ms": lat, "min_ms": lat, "p90_ms": lat,
                "std_ms": 0.0, "runs": 3, "status": "ok", "error": None}

    monkeypatch.setattr(TorchLatencyOracle, "_time_arch", fake)


def test_collect_explains_reference_rounds_and_retries(tmp_path, capsys, monkeypatch):
    _qc_timer(monkeypatch, bad_round=1)
    argv = ["collect", "--space", "mobilenetv3", "--n", "4", "--store", str(tmp_path / "s.db"),
            "--resolution", "32", "--n-references", "2", "--check-every", "2",
            "--max-retries", "1"]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert "timing 2 reference architectures for quality control first" in err
    assert "quality control failed" in err and "timing the last 2 architecture(s) again" in err
    assert "the bar's total grows by 2" in err
    assert "re-timed for QC 2" in out and "timed again" in out


def test_n_references_0_prints_no_qc_from_older_rows(tmp_path, capsys, monkeypatch):
    _qc_timer(monkeypatch, bad_round=1)
    store = tmp_path / "s.db"
    base = ["collect", "--space", "mobilenetv3", "--store", str(store), "--resolution", "32",
            "--no-progress"]
    code, out, _ = _run([*base, "--n", "4", "--n-references", "2", "--check-every", "2",
                         "--max-retries", "0"], capsys)
    assert code == 0 and "QC FAILED" in out
    code, out, _ = _run([*base, "--n", "6", "--n-references", "0"], capsys)
    assert code == 0 and "QC: off (--n-references 0)" in out and "FAILED" not in out


@pytest.mark.parametrize("command", ["fit", "collect"])
@pytest.mark.parametrize("value", ["10", "3", "0", "-0.1", "1", "nan", "inf"])
def test_variance_threshold_must_be_a_fraction(tmp_path, capsys, monkeypatch, command, value):
    monkeypatch.chdir(tmp_path)
    timed = _spy_timer(monkeypatch)
    argv = [command, "--space", "mobilenetv3", "--variance-threshold", value, "--no-progress"]
    if command == "collect":
        argv += ["--store", "s.sqlite", "--n", "2"]
    code, _, err = _run(argv, capsys)
    assert code == 2 and "--variance-threshold must be a fraction in (0, 1) (0.03 is 3%)" in err
    assert timed == [] and list(tmp_path.iterdir()) == []


def test_fit_takes_max_retries_and_variance_threshold(tmp_path, capsys, monkeypatch):
    _spy_timer(monkeypatch)
    out = tmp_path / "p.joblib"
    argv = [*_device_args(tmp_path / "s.sqlite", out), "--max-retries", "0",
            "--variance-threshold", "0.2", "--clock", "wall", "--no-paired", "--rel-ci", "0",
            "--min-runs", "5", "--burn-in", "0"]
    code, printed, err = _run(argv, capsys)
    assert code == 0, err
    oracle = joblib.load(out).oracle
    assert (oracle.max_retries, oracle.variance_threshold) == (0, 0.2)
    assert (oracle.clock, oracle.paired, oracle.rel_ci, oracle.min_runs, oracle.burn_in) == (
        "wall", False, None, 5, 0.0)
    assert "quality control: off (--n-references 0)" in printed


# ---- item 10: tiny tables
def _table_rows(tmp_path, n):
    frame = pd.read_csv(bundled_path_of(TABLE)).head(n)
    path = tmp_path / f"t{n}.csv"
    frame.to_csv(path, index=False)
    return path


def test_fit_refuses_a_tiny_table_and_warns_on_a_small_test_set(tmp_path, capsys):
    base = ["fit", "--regressor", "ridge", "--no-progress"]
    code, _, err = _run([*base, "--table", str(_table_rows(tmp_path, 10)), "--out",
                         str(tmp_path / "a.joblib")], capsys)
    assert code == 2 and "holds only 10 distinct architecture(s); a fit needs at least 20" in err
    assert not (tmp_path / "a.joblib").exists()
    code, out, err = _run([*base, "--table", str(_table_rows(tmp_path, 60)), "--out",
                           str(tmp_path / "b.joblib")], capsys)
    assert code == 0
    assert "WARNING: the held-out test set has only 12 architecture(s)" in err
    assert "sizes used: n_test 12, n_initial 24, n_step 6" in out


# ---- item 11: --help, --version, option names
def _options(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((name, a) for a in sub._actions)


def test_every_option_shows_its_default_and_meaning():
    import argparse

    from esm_sklearn.cli import _build_parser, _HelpFormatter

    parser = _build_parser()
    formatter = _HelpFormatter("esm-sklearn")
    seen = 0
    for command, action in _options(parser):
        if (not action.option_strings or action.help == argparse.SUPPRESS
                or isinstance(action, argparse._HelpAction)):
            continue
        text = formatter._get_help_string(action) % {"default": action.default}
        assert len(action.help) > 8, (command, action.option_strings)
        assert "default" in text or (action.required and "required" in text), (
            command, action.option_strings)
        seen += 1
    assert seen > 60
    sample = next(a for c, a in _options(parser) if c == "sample" and "--space" in a.option_strings)
    assert set(sample.choices) >= {"resnet", "mobilenetv3", "densenet", "fbnet"}


def test_version_and_renamed_help_options(capsys):
    from esm_sklearn import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    assert "--help-target-device" in text and "--help-data" in text and "--help-search-space" in text
    assert "--help-table" not in text and "--help-device " not in text


def test_help_replay_uses_the_bundled_tables(tmp_path, capsys):
    code, out, err = _run(["fit", "--help-target-device", "gold_6240", "--regressor", "ridge",
                           "--max-iter", "0", "--n-initial", "100", "--n-test", "100",
                           "--out", str(tmp_path / "h.joblib"), "--no-progress"], capsys)
    assert code == 0, err
    assert "replay of fbnet_latency [gold_6240] (5000 rows" in out
    # The first release's spelling still works (an unknown device: only the headers are read).
    code, out, err = _run(["fit", "--help-device", "nope", "--out", str(tmp_path / "h.joblib"),
                           "--no-progress"], capsys)
    assert code == 2 and "device 'nope' not found in the bundled HELP tables" in err


# ---- items 13 and 14: figures; model files are pickles
def test_fit_and_evaluate_write_plots(fitted, tmp_path, capsys):
    code, out, err = _run(["fit", "--table", TABLE, "--regressor", "ridge", "--no-progress",
                           "--out", str(tmp_path / "m.joblib"), "--plots",
                           str(tmp_path / "fig")], capsys)
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "fig").iterdir())
    assert names == ["binwise_accuracy.png", "convergence.png", "predicted_vs_measured.png"]
    assert all((tmp_path / "fig" / n).read_bytes()[:4] == b"\x89PNG" for n in names)
    code, out, err = _run(["evaluate", "--model", str(fitted[0]), "--table", "h200_resnet_b1",
                           "--plots", str(tmp_path / "ev")], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == [
        "binwise_accuracy.png", "predicted_vs_measured.png"]
    (tmp_path / "afile").write_text("x")
    code, _, err = _run(["evaluate", "--model", str(fitted[0]), "--table", TABLE, "--plots",
                         str(tmp_path / "afile")], capsys)
    assert code == 2 and "is a file; give a folder" in err


@pytest.mark.parametrize("command", ["predict", "evaluate", "fit"])
def test_help_says_model_files_are_pickles(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "pickle" in text and "trust" in text


# ---- hardening: unwritable store paths, before any timing
def test_unwritable_store_paths_fail_before_timing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    timed = _spy_timer(monkeypatch)
    (tmp_path / "afile").write_text("x")
    for argv in (["collect", "--space", "mobilenetv3", "--n", "2", "--resolution", "32",
                  "--store", "afile/s.sqlite", "--no-progress"],
                 _device_args(tmp_path / "afile" / "deep" / "s.sqlite", tmp_path / "p.joblib")):
        code, _, err = _run(argv, capsys)
        assert code == 2 and "'afile' is a file, not a folder" in err.replace(str(tmp_path) + "/", "")
    code, _, err = _run(["collect", "--space", "mobilenetv3", "--n", "2", "--store", str(tmp_path),
                         "--no-progress"], capsys)
    assert code == 2 and "is a directory" in err
    assert timed == [] and not (tmp_path / "p.joblib").exists()


def test_read_only_store_fails_before_timing(tmp_path, capsys, monkeypatch):
    store = tmp_path / "ro.sqlite"
    with MeasurementStore(store) as s:
        s.add({"kind": "arch", "arch": load_bundled(TABLE).data[0], "setting_key": "k",
               "latency_ms": 1.0, "status": "ok"})
    timed = _spy_timer(monkeypatch)
    if os.geteuid() != 0:
        store.chmod(0o444)
        undo = ["chmod", "644", str(store)]
    else:
        made = subprocess.run(["chattr", "+i", str(store)], capture_output=True)
        if made.returncode:
            pytest.skip("root without chattr: cannot make a read-only file")
        undo = ["chattr", "-i", str(store)]
    try:
        code, _, err = _run(["collect", "--space", "mobilenetv3", "--n", "2", "--resolution",
                             "32", "--store", str(store), "--no-progress"], capsys)
        assert code == 2 and "cannot be written" in err
        assert timed == []
        with MeasurementStore(store) as s:  # still readable and exportable
            assert len(s) == 1
            s.export_csv(tmp_path / "out.csv")
    finally:
        subprocess.run(undo, check=True)


# ---- hardening: extreme numbers in parameters and tables, odd input to predict
@pytest.mark.parametrize("extra, message", [
    (["--weights", "inf", "1"], "weights"),
    (["--weights", "nan", "1"], "weights"),
    (["--weights", "-1", "1"], "weights"),
    (["--acc-threshold", "nan"], "--acc-threshold must be a fraction"),
    (["--acc-threshold", "1e308"], "--acc-threshold must be a fraction"),
    (["--acc-threshold", "1e-320"], None),
    (["--n-test", "0"], "n_test"),
    (["--n-bins", "-3"], "n_bins"),
    (["--max-iter", "-1"], "max_iter"),
])
def test_extreme_parameters_are_clear_errors(tmp_path, capsys, extra, message):
    code, _, err = _run(["fit", "--table", TABLE, "--regressor", "ridge", "--no-progress",
                         "--max-iter", "1", "--out", str(tmp_path / "m.joblib"), *extra], capsys)
    if message is None:  # a tiny positive threshold is legal (and reached at once)
        assert code == 0, err
        return
    assert code == 2 and message in err, err
    _no_numpy_repr(err)


@pytest.mark.parametrize("value", ["inf", "1e308", "1e-320", "-3", "nan", "fast"])
def test_extreme_table_values_are_clear_errors_in_evaluate(fitted, tmp_path, capsys, value):
    frame = pd.read_csv(bundled_path_of(TABLE))
    frame["latency_ms"] = frame["latency_ms"].astype(object)
    frame.loc[7, "latency_ms"] = value
    frame.to_csv(tmp_path / "t.csv", index=False)
    code, _, err = _run(["evaluate", "--model", str(fitted[0]), "--table",
                         str(tmp_path / "t.csv")], capsys)
    assert code == 2 and "row 7 (line 9): column 'latency_ms'" in err
    _no_numpy_repr(err)


@pytest.mark.parametrize("content, message", [
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"space": "resnet", "depth": [1e999, 1, 1, 1]}', "line 1:"),
    ('{"space": "resnet", "depth": [NaN, 1, 1, 1]}', "line 1:"),
    ('{"space": "resnet", "depth": "deep"}', "line 1:"),
    ('{"space": ["resnet"]}', "line 1:"),
    ('"{\\"space\\": 1}"', "expected an architecture"),
    ("\ufeff", "no architecture in it"),
    ("   \n\t\n", "no architecture in it"),
])
def test_pathological_predict_input_is_a_clear_error(fitted, tmp_path, capsys, content, message):
    src = tmp_path / "odd.jsonl"
    src.write_text(content, encoding="utf-8")
    code, out, err = _run(["predict", "--model", str(fitted[0]), str(src)], capsys)
    assert code == 2 and message in err and out == "", err
    _no_numpy_repr(err)


def test_binary_predict_input_is_a_clear_error(fitted, tmp_path, capsys):
    src = tmp_path / "bin.jsonl"
    src.write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = _run(["predict", "--model", str(fitted[0]), str(src)], capsys)
    assert code == 2 and "not a UTF-8 text file" in err


def test_store_given_as_model_is_refused_without_unpickling(tmp_path, capsys):
    MeasurementStore(tmp_path / "s.sqlite").close()
    code, _, err = _run(["predict", "--model", str(tmp_path / "s.sqlite"), "-"], capsys)
    assert code == 2 and "is a SQLite database" in err


def test_help_imports_nothing_heavy():
    # Issue 8 item 7 for the CLI: the parser needs neither scikit-learn, pandas nor torch.
    code = ("import sys, esm_sklearn.cli as c; c._build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'skorch', 'sklearn', 'pandas', 'matplotlib') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


# ------------------------------------------- setting, OOD and transfer (issues 11, 13)
def test_fit_records_the_tables_setting_and_predict_warns_on_another(fitted, tmp_path, capsys):
    path, _ = fitted
    est = joblib.load(path)
    assert (est.setting_["device"], est.setting_["batch_size"]) == ("h200", 32)
    assert sum(est.setting_["rows_per_bin"]) == len(est.X_train_)
    corner = {"space": "resnet", "depth": [7] * 4, "kernel_size": [[7] * 7] * 4,
              "expand_ratio": [[1.0] * 7] * 4}
    src = _jsonl(tmp_path / "archs.jsonl", [est.X_test_[0], corner])
    out_csv = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(path), "--csv", "--device", "cpu",
                 "--batch-size", "1", "--out", str(out_csv), str(src)]) == 0
    err = capsys.readouterr().err
    assert "model fitted for: space resnet, device h200, batch_size 32" in err
    assert "warning" in err and "device" in err and "batch_size" in err
    with out_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["ood"] for r in rows] == ["0", "1"]
    assert float(rows[1]["ood_score"]) > float(rows[0]["ood_score"])
    assert main(["predict", "--model", str(path), "--device", "h200", "--batch-size", "32",
                 str(src)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_fit_transfer_from_other_devices_predictors(tmp_path, capsys):
    from esm_sklearn import TransferLatencyRegressor

    sources = []
    for device in ("pixel3", "gold_6240"):
        sources.append(tmp_path / f"{device}.joblib")
        assert main(["fit", "--help-target-device", device, "--regressor", "ridge",
                     "--max-samples", "300", "--out", str(sources[-1]), "--no-progress"]) == 0
    out = tmp_path / "raspi4.joblib"
    argv = ["fit", "--help-target-device", "raspi4", "--transfer-from", *map(str, sources),
            "--n-initial", "10", "--n-step", "10", "--max-samples", "30", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "transfer from 2 predictor(s)" in printed
    est = joblib.load(out)
    assert isinstance(est.estimator_, TransferLatencyRegressor) and len(est.X_train_) <= 30
    assert est.setting_["device"] == "raspi4"
    # --out may not overwrite a source
    assert main([*argv[:-3], "--out", str(sources[0]), "--no-progress"]) == 2
    assert "--transfer-from" in capsys.readouterr().err
