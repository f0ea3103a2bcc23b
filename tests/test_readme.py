"""Every example in README.md runs as written.

Code blocks marked ``python`` run in order in one fresh interpreter (as a user
pasting them into one session would); blocks marked ``bash`` run line by line
in a shell. Both run in a temporary folder, so what they write (a predictor, a
store) lands there. Blocks marked ``console`` (installing, running this test
suite, a cluster that must already exist) are shown, not run.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO

README = REPO / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README.read_text()) if lang == language]


def test_readme_has_runnable_examples_of_both_kinds():
    assert blocks("python") and blocks("bash")


def test_python_examples_run_as_written(tmp_path):
    code = "\n".join(blocks("python"))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def commands() -> list[str]:
    out = []
    for body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


@pytest.mark.parametrize("command", commands())
def test_shell_examples_run_as_written(command, tmp_path_factory):
    # One folder for all commands: a later one may read what an earlier one wrote.
    folder = tmp_path_factory.getbasetemp() / "readme_shell"
    folder.mkdir(exist_ok=True)
    result = subprocess.run(command, shell=True, cwd=folder, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
