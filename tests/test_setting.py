"""A predictor's setting (make_setting, check_setting) and the out-of-distribution score."""

import io
import warnings

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

from esm_sklearn import FCCEncoder, get_space
from esm_sklearn.datasets import load_bundled
from esm_sklearn.setting import (
    OODScorer,
    SettingMismatchWarning,
    check_setting,
    make_setting,
    record_setting,
    setting_from_table,
)

CORNER = {"space": "resnet", "depth": [7] * 4, "kernel_size": [[7] * 7] * 4,
          "expand_ratio": [[1.0] * 7] * 4}


def test_make_setting_records_device_batch_resolution_source_and_bins():
    space = get_space("resnet")
    archs = space.sample(50, strategy="balanced", n_bins=5, random_state=0)
    desc = {"name": "NVIDIA H200", "type": "cuda", "torch": "2.x", "threads": 16,
            "batch_size": 32, "resolution": 224}
    s = make_setting(space, archs, device=desc, source="store.sqlite")
    assert s == {"space": "resnet", "device": "NVIDIA H200", "device_type": "cuda",
                 "batch_size": 32, "resolution": 224, "source": "store.sqlite",
                 "n_rows": 50, "n_bins": 5, "rows_per_bin": [10] * 5}
    assert make_setting("densenet")["n_rows"] is None
    assert make_setting(space, archs, device=desc, batch_size=1)["batch_size"] == 1
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        make_setting(space, batch_size=0)
    with pytest.raises(ValueError, match="device must be"):
        make_setting(space, device=3)
    with pytest.raises(ValueError, match="unknown search space"):
        make_setting("nope")


def test_setting_from_a_bundled_table():
    s = setting_from_table(load_bundled("h200_resnet_b1"))
    assert (s["space"], s["device"], s["batch_size"], s["resolution"]) == ("resnet", "h200", 1, 224)
    assert s["source"] == "h200_resnet_b1.csv" and s["n_rows"] == sum(s["rows_per_bin"]) > 0
    assert setting_from_table(load_bundled("h200_resnet_b32"), device="NVIDIA H200")["device"] == (
        "NVIDIA H200"
    )


def test_check_setting_warns_on_another_setting_only():
    space = get_space("resnet")
    archs = space.sample(20, random_state=0)
    model = make_pipeline(FCCEncoder(space="resnet"), Ridge()).fit(archs, np.ones(20))
    model[-1].setting_ = make_setting(space, archs, device={"name": "NVIDIA H200", "type": "cuda"},
                                      batch_size=32, resolution=224)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_setting(model, space=space, device="h200", batch_size=32, resolution=224) == []
        assert check_setting(model, device="cuda", source="anything") == []  # unrecorded: unchecked
    with pytest.warns(SettingMismatchWarning, match=r"device: fitted for 'NVIDIA H200', asked about "
                      r"'cpu'; batch_size: fitted for 32, asked about 1; resolution"):
        problems = check_setting(model, device="cpu", batch_size=1, resolution=32)
    assert len(problems) == 3
    with pytest.warns(SettingMismatchWarning, match="space"):
        check_setting(model.steps[-1][1].setting_, space="mobilenetv3")
    with pytest.warns(SettingMismatchWarning, match="records no setting"):
        check_setting(Ridge(), device="cpu")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['dvice'\]"):
        check_setting(model, dvice="cpu")


def test_ood_scorer_flags_a_corner_architecture_and_stays_small():
    space = get_space("resnet")
    train = space.sample(3000, strategy="balanced", random_state=0)
    ood = OODScorer(max_reference=1000).fit(train)
    assert ood.reference_.shape == (1000, 36) and ood.reference_.dtype == np.uint8
    assert ood.scale_ > 0 and ood.n_rows_ == 3000
    held_out = space.sample(300, strategy="balanced", random_state=1)
    scores = ood.ood_score(held_out)
    assert np.median(scores) < 1.5 and ood.is_ood(held_out).mean() < 0.02
    assert ood.ood_score([CORNER])[0] > 2.5 and ood.is_ood([CORNER]).tolist() == [True]
    assert ood.ood_score(train[:1])[0] <= 1.0
    assert ood.rows_per_bin_.sum() == 3000
    assert ood.bin_rows([CORNER]).tolist() == [ood.rows_per_bin_[-1]]
    buf = io.BytesIO()
    joblib.dump(ood, buf)
    assert buf.tell() < 100_000
    loaded = joblib.load(io.BytesIO(buf.getvalue()))
    np.testing.assert_array_equal(loaded.ood_score(held_out[:20]), scores[:20])
    assert clone(ood).get_params() == ood.get_params()


def test_ood_scorer_rejects_bad_parameters_and_data():
    archs = get_space("densenet").sample(10, random_state=0)
    with pytest.raises(ValueError, match="max_reference must be an int >= 2"):
        OODScorer(max_reference=1).fit(archs)
    with pytest.raises(ValueError, match="threshold must be a positive number"):
        OODScorer(threshold=0).fit(archs)
    with pytest.raises(ValueError, match="at least 2 distinct"):
        OODScorer().fit(archs[:1] * 3)
    ood = OODScorer(space="densenet").fit(archs)
    with pytest.raises(ValueError, match="kernel_size"):
        ood.ood_score([dict(archs[0], kernel_size=[2, 3, 3, 3, 3])])


def test_record_setting_travels_with_a_pickled_pipeline():
    table = load_bundled("h200_resnet_b32")
    model = make_pipeline(FCCEncoder(space="resnet"), Ridge()).fit(table.data, table.target)
    record_setting(model, setting_from_table(table), table.data)
    buf = io.BytesIO()
    joblib.dump(model, buf)
    loaded = joblib.load(io.BytesIO(buf.getvalue()))
    assert loaded.setting_ == model.setting_ and loaded.setting_["batch_size"] == 32
    assert loaded.ood_.is_ood([CORNER]).tolist() == [True]
    with pytest.warns(SettingMismatchWarning, match="batch_size: fitted for 32, asked about 1"):
        check_setting(loaded, batch_size=1, device="h200")
