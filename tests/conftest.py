"""What several test files share: paths, skip markers for optional data, torch threads."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
H200 = SHARED / "datasets" / "h200"
SHARED_HELP = SHARED / "external" / "help"

BUILTIN_SPACES = ["resnet", "mobilenetv3", "densenet", "ofa_mobilenetv3", "fbnet"]


def toy_space():
    """A user-defined space with every kind of field: restricted block combinations, a
    unit that may be empty, a unit of fixed depth, a per-unit choice and a global choice."""
    from esm_sklearn import SearchSpace

    return SearchSpace(
        "toy", 3, [(0, 2), (1, 3), (2, 2)],
        block_choices={"k": (3, 5), "e": (1, 2, 4)},
        unit_choices={"w": (8, 16)},
        global_choices={"res": (32, 64, 96)},
        block_combinations=[(3, 1), (3, 2), (5, 4)],
    )


def all_spaces():
    """Every built-in space and the toy space."""
    from esm_sklearn import get_space

    return [get_space(n) for n in BUILTIN_SPACES] + [toy_space()]


needs_h200 = pytest.mark.skipif(not H200.is_dir(), reason=f"{H200} not present")
needs_shared_help = pytest.mark.skipif(
    not (SHARED_HELP / "ofa_latency.csv").is_file(),
    reason=f"HELP tables not present in {SHARED_HELP}",
)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny nets and tiny models gain nothing from threads, and threads contend on a
    shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def load_study(monkeypatch):
    """``load_study(name)`` imports ``studies/<name>.py`` (with ``studies/`` importable,
    as when the study runs as a script) to test its helpers."""
    import importlib.util
    import sys

    monkeypatch.syspath_prepend(str(REPO / "studies"))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"_study_{name}", REPO / "studies" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
        return module

    return load
