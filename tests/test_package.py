"""The package as a whole: a torch-free import, public names resolved on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import esm_sklearn

_PROBE = ("import sys, esm_sklearn, esm_sklearn.cli, esm_sklearn.active, esm_sklearn.oracle, "
          "esm_sklearn.fleet, esm_sklearn.transfer, esm_sklearn.conformal, esm_sklearn.setting\n"
          "{touch}\n"
          "print(sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'skorch'}}))")


@pytest.mark.parametrize("touch, loaded", [
    ("", "[]"),
    ("esm_sklearn.ActiveLatencyEstimator, esm_sklearn.TorchLatencyOracle, esm_sklearn.get_space",
     "[]"),
    ("esm_sklearn.MLPLatencyRegressor", "['skorch', 'torch']"),
])
def test_import_loads_torch_only_when_a_torch_backed_name_is_used(touch, loaded):
    out = subprocess.run([sys.executable, "-c", _PROBE.format(touch=touch)],
                         capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == loaded


def test_every_public_name_resolves_and_unknown_names_raise():
    for name in esm_sklearn.__all__:
        assert getattr(esm_sklearn, name) is not None
    assert set(esm_sklearn.__all__) <= set(dir(esm_sklearn))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        esm_sklearn.nope  # noqa: B018
