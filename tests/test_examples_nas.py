"""The NAS recipes in examples/ run end to end at tiny sizes (in a subprocess, as a user runs them)."""

import os
import subprocess
import sys

import pytest
from conftest import REPO


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / name), *args],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "error::UserWarning",
             "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_nas_optuna_runs_small():
    pytest.importorskip("optuna")
    out = run_example("nas_optuna.py", "--n-trials", "24", "--population", "8", "--max-epochs", "3")
    assert "search: NSGA-II over 32 integer genes, 24 trials" in out
    assert "Pareto front:" in out and "most parameters per predicted ms" in out


@pytest.mark.slow
def test_nas_evolution_runs_small():
    out = run_example("nas_evolution.py", "--generations", "2", "--population", "12", "--max-epochs", "3")
    assert "generation   2: best" in out
    rows = [line for line in out.splitlines() if line.strip().endswith("]")]
    assert len(rows) == 5
