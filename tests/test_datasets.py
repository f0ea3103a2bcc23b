import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from esm_sklearn import datasets, get_space
from esm_sklearn.datasets import (
    bundled_path,
    help_dir,
    list_bundled,
    list_help_devices,
    load_bundled,
    load_help,
    load_latency_table,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
H200 = SHARED / "datasets" / "h200"
SHARED_HELP = SHARED / "external" / "help"
# The HELP tables ship inside the package (gzipped): these tests run everywhere.
HELP = help_dir()
OFA_CSV, FBNET_CSV = HELP / "ofa_latency.csv.gz", HELP / "fbnet_latency.csv.gz"
needs_h200 = pytest.mark.skipif(not H200.is_dir(), reason=f"{H200} not present")
needs_shared_help = pytest.mark.skipif(
    not (SHARED_HELP / "ofa_latency.csv").is_file(),
    reason=f"HELP tables not present in {SHARED_HELP}",
)

# Row counts stated in shared/datasets/h200/README.md.
H200_ROWS = {"h200_resnet_b1": 756, "h200_mobilenetv3_b1": 332, "h200_densenet_b1": 206, "h200_resnet_b32": 130}
FBNET_STAGES = (1, 4, 4, 4, 4, 4, 1)


# ------------------------------------------------------------ bundled tables
def test_list_bundled_lists_the_h200_tables_without_side_files():
    names = list_bundled()
    assert names == sorted(names)
    assert set(H200_ROWS) <= set(names)
    assert not [n for n in names if n.endswith(("_references", "_lut"))]


@pytest.mark.parametrize("name", sorted(H200_ROWS))
def test_load_bundled_round_trip(name):
    table = load_bundled(name)
    space = get_space(table.space)
    assert len(table.data) == len(table.target) == len(table.frame) == H200_ROWS[name]
    assert table.space == name.split("_")[1]
    assert table.target.dtype == np.float64 and (table.target > 0).all()
    np.testing.assert_array_equal(table.target, table.frame["latency_ms"].to_numpy(dtype=float))
    for arch, text in zip(table.data, table.frame["arch"], strict=True):
        assert space.validate(arch) == arch  # canonical
        assert arch == space.validate(json.loads(text))
    np.testing.assert_array_equal(space.total_depth(table.data), table.frame["total_depth"])
    assert {"ref_id", "latency_ms"} <= set(table.references.columns)
    if name.endswith("_b1"):
        assert Path(table.lut) == bundled_path(name, "lut") and Path(table.lut).is_file()
    else:
        assert table.lut is None
    assert name in table.DESCR and "H200" in table.DESCR


def test_bundled_data_folder_has_env_and_readme():
    folder = bundled_path("h200_resnet_b1").parent
    assert json.loads((folder / "h200_env.json").read_text())["name"] == "NVIDIA H200"
    assert "drift" in (folder / "README.md").read_text()


@needs_h200
@pytest.mark.parametrize("name", sorted(H200_ROWS))
def test_bundled_tables_equal_the_shared_files(name):
    shared = H200 / (name.removeprefix("h200_") + ".csv")
    assert bundled_path(name).read_bytes() == shared.read_bytes()
    table = load_latency_table(shared)
    assert table.data == load_bundled(name).data
    assert table.references is not None


def test_bundled_path_kinds_and_errors():
    assert bundled_path("h200_resnet_b1").name == "h200_resnet_b1.csv"
    assert bundled_path("h200_resnet_b1.csv") == bundled_path("h200_resnet_b1")
    assert bundled_path("h200_resnet_b1", "references").name == "h200_resnet_b1_references.csv"
    assert bundled_path("h200_densenet_b1", "lut").name == "h200_densenet_b1_lut.csv"
    with pytest.raises(FileNotFoundError, match="h200_resnet_b32.*no lut"):
        bundled_path("h200_resnet_b32", "lut")
    with pytest.raises(ValueError, match="kind must be"):
        bundled_path("h200_resnet_b1", "bogus")
    with pytest.raises(ValueError, match="unknown bundled table 'nope'.*h200_resnet_b1"):
        load_bundled("nope")
    with pytest.raises(ValueError, match="unknown bundled table"):
        bundled_path("h200_resnet_b1_lut")


def test_a_table_added_to_the_data_folder_is_listed_and_loads(tmp_path, monkeypatch):
    src = bundled_path("h200_mobilenetv3_b1")
    for suffix in ("", "_references", "_lut"):
        shutil.copy(src.with_name(f"h200_mobilenetv3_b1{suffix}.csv"), tmp_path / f"cpu_mobilenetv3_b1{suffix}.csv")
    shutil.copy(bundled_path("h200_resnet_b32"), tmp_path / "h200_resnet_b32.csv")
    monkeypatch.setattr(datasets, "_data_dir", lambda: tmp_path)
    assert list_bundled() == ["cpu_mobilenetv3_b1", "h200_resnet_b32"]
    table = load_bundled("cpu_mobilenetv3_b1")
    assert len(table.data) == H200_ROWS["h200_mobilenetv3_b1"]
    assert table.references is not None and table.lut == str(tmp_path / "cpu_mobilenetv3_b1_lut.csv")


def test_other_target_columns():
    table = load_bundled("h200_resnet_b32", target="median_ms")
    np.testing.assert_array_equal(table.target, table.frame["median_ms"].to_numpy(dtype=float))
    assert table.target_name == "median_ms"
    with pytest.raises(ValueError, match=r"missing column\(s\) \['nope_ms'\]"):
        load_bundled("h200_resnet_b32", target="nope_ms")


# ---------------------------------------------------------- corrupt tables
@pytest.fixture
def small_table():
    """The first 6 rows of a bundled table, as a DataFrame to corrupt."""
    return pd.read_csv(bundled_path("h200_resnet_b1"), nrows=6)


def _write(frame, tmp_path, name="table.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_side_files_are_found_next_to_any_table(small_table, tmp_path):
    path = _write(small_table, tmp_path)
    table = load_latency_table(path)
    assert table.references is None and table.lut is None and len(table.data) == 6
    shutil.copy(bundled_path("h200_resnet_b1", "references"), tmp_path / "table_references.csv")
    shutil.copy(bundled_path("h200_resnet_b1", "lut"), tmp_path / "table_lut.csv")
    table = load_latency_table(str(path))
    assert len(table.references) == len(pd.read_csv(tmp_path / "table_references.csv"))
    assert table.lut == str(tmp_path / "table_lut.csv")
    assert table.filename == str(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_latency_table(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="is a folder"):
        load_latency_table(tmp_path)


def test_bad_json_names_file_and_row(small_table, tmp_path):
    small_table.loc[3, "arch"] = '{"space": "resnet", "depth": [1, 1'
    path = _write(small_table, tmp_path)
    with pytest.raises(ValueError, match=r"table\.csv: row 3 \(line 5\): column 'arch' is not valid JSON"):
        load_latency_table(path)
    small_table.loc[3, "arch"] = "[1, 2]"
    with pytest.raises(ValueError, match="row 3.*JSON object"):
        load_latency_table(_write(small_table, tmp_path))


@pytest.mark.parametrize("column", ["arch", "latency_ms"])
def test_missing_column_is_named(small_table, tmp_path, column):
    path = _write(small_table.drop(columns=column), tmp_path)
    with pytest.raises(ValueError, match=rf"table\.csv: missing column\(s\) \['{column}'\]"):
        load_latency_table(path)


def test_invalid_arch_names_file_row_and_field(small_table, tmp_path):
    arch = json.loads(small_table.loc[2, "arch"])
    arch["kernel_size"][0][0] = 4
    small_table.loc[2, "arch"] = json.dumps(arch)
    path = _write(small_table, tmp_path)
    with pytest.raises(ValueError, match=r"table\.csv: row 2 .*invalid architecture.*unit 0, block 0.*'kernel_size'"):
        load_latency_table(path)


@pytest.mark.parametrize("value", [-1.0, 0.0, np.nan, "fast"])
def test_bad_latency_names_the_row(small_table, tmp_path, value):
    small_table["latency_ms"] = small_table["latency_ms"].astype(object)
    small_table.loc[4, "latency_ms"] = value
    path = _write(small_table, tmp_path)
    with pytest.raises(ValueError, match=r"table\.csv: row 4 \(line 6\): column 'latency_ms'.*> 0"):
        load_latency_table(path)


def test_mixed_spaces_are_rejected(small_table, tmp_path):
    other = pd.read_csv(bundled_path("h200_densenet_b1"), nrows=2)
    path = _write(pd.concat([small_table, other], ignore_index=True), tmp_path)
    with pytest.raises(ValueError, match=r"several search spaces \['resnet', 'densenet'\].*row 6"):
        load_latency_table(path)


def test_space_column_and_arch_must_agree(small_table, tmp_path):
    small_table.loc[1, "arch"] = small_table.loc[1, "arch"].replace('"resnet"', '"mobilenetv3"')
    with pytest.raises(ValueError, match="row 1.*space 'mobilenetv3' given to space 'resnet'"):
        load_latency_table(_write(small_table, tmp_path))


def test_foreign_and_empty_csvs(tmp_path):
    help_like = pd.DataFrame({"index": [0], "r": [224], **{f"d{u}": [2] for u in range(5)}})
    help_like = help_like.assign(**{f"ks{j:02d}": [3] for j in range(20)}, **{f"e{j:02d}": [3] for j in range(20)})
    help_like["v100_1"] = 1.0
    with pytest.raises(ValueError, match="missing column.*use load_help"):
        load_latency_table(_write(help_like, tmp_path, "foreign.csv"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty.csv: not a readable CSV"):
        load_latency_table(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("space,arch,latency_ms\n")
    with pytest.raises(ValueError, match="header.csv: the table has no rows"):
        load_latency_table(tmp_path / "header.csv")


# --------------------------------------------------------------- HELP tables
@pytest.fixture(scope="module")
def ofa():
    return load_help(device="v100_1", space="ofa_mobilenetv3")


@pytest.fixture(scope="module")
def fbnet():
    return load_help(FBNET_CSV, "pixel3")


@pytest.fixture(scope="module")
def small_help(tmp_path_factory):
    """A HELP folder holding the first rows of both real tables."""
    folder = tmp_path_factory.mktemp("help")
    for name in ("ofa_latency.csv", "fbnet_latency.csv"):
        pd.read_csv(HELP / f"{name}.gz", nrows=12).to_csv(folder / name, index=False)
    return folder


def test_load_help_ofa_round_trip_and_masking(ofa):
    raw = pd.read_csv(OFA_CSV)
    space = get_space("ofa_mobilenetv3")
    assert ofa.space == "ofa_mobilenetv3" and ofa.device == "v100_1"
    assert len(ofa.data) == len(ofa.target) == 5000
    np.testing.assert_array_equal(ofa.target, raw["v100_1"].to_numpy(dtype=float))
    np.testing.assert_array_equal(ofa.frame["latency_ms"], ofa.target)
    assert set(raw.columns) <= set(ofa.frame.columns)
    for i, arch in enumerate(ofa.data):
        space.block_codes(arch)  # raises for an invalid architecture
        assert sum(len(ks) for ks in arch["kernel_size"]) == sum(arch["depth"])
        assert sum(len(er) for er in arch["expand_ratio"]) == sum(arch["depth"])
        assert arch["resolution"] == raw.loc[i, "r"]
    assert json.loads(ofa.frame.loc[7, "arch"]) == ofa.data[7]
    # Row 0 by hand: slot j = 4 * unit + position, used while position < depth.
    row = raw.iloc[0]
    depth = [int(row[f"d{u}"]) for u in range(5)]
    assert ofa.data[0]["depth"] == depth
    assert ofa.data[0]["kernel_size"] == [[int(row[f"ks{4 * u + j:02d}"]) for j in range(d)] for u, d in enumerate(depth)]
    assert ofa.data[0]["expand_ratio"] == [[int(row[f"e{4 * u + j:02d}"]) for j in range(d)] for u, d in enumerate(depth)]


def test_load_help_fbnet_drops_skip_layers(fbnet):
    raw = pd.read_csv(FBNET_CSV)
    space = get_space("fbnet")
    assert fbnet.space == "fbnet" and len(fbnet.data) == 5000
    np.testing.assert_array_equal(fbnet.target, raw["pixel3"].to_numpy(dtype=float))
    layers = raw[[f"layer{j:02d}" for j in range(22)]].to_numpy()
    bounds = np.cumsum((0, *FBNET_STAGES))
    for i in range(0, 5000, 50):
        arch = fbnet.data[i]
        space.block_codes(arch)
        stages = [layers[i, bounds[s] : bounds[s + 1]] for s in range(len(FBNET_STAGES))]
        kept = [[op for op in stage if op != "skip"] for stage in stages]
        assert arch["depth"] == [len(k) for k in kept]
        assert arch["groups"] == [[2 if op.endswith("_g2") else 1 for op in k] for k in kept]
        assert arch["kernel_size"] == [[int(op[1]) for op in k] for k in kept]
        assert arch["expand_ratio"] == [[int(op.split("_")[1][1:]) for op in k] for k in kept]
    n_blocks = (layers != "skip").sum(axis=1)
    np.testing.assert_array_equal([sum(a["depth"]) for a in fbnet.data], n_blocks)
    assert (n_blocks < 22).any()  # skip layers do occur


def test_help_device_lookup_in_a_folder(small_help):
    devices = list_help_devices(small_help)
    assert {"pixel3", "v100_1", "2080ti_1"} <= set(devices) and devices == sorted(devices)
    assert "index" not in devices and "r" not in devices
    assert "pixel3" not in list_help_devices(small_help, space="ofa_mobilenetv3")
    assert list_help_devices(small_help / "ofa_latency.csv") == list_help_devices(small_help, space="ofa_mobilenetv3")
    with pytest.raises(ValueError, match="'2080ti_1' is in several HELP tables.*space="):
        load_help(small_help, "2080ti_1")
    assert load_help(small_help, "2080ti_1", space="fbnet").space == "fbnet"
    table = load_help(small_help, "2080ti_1", space="ofa_mobilenetv3")
    assert table.space == "ofa_mobilenetv3" and len(table.data) == 12
    assert load_help(small_help / "fbnet_latency.csv", "2080ti_1").space == "fbnet"
    with pytest.raises(ValueError, match="device 'nope' not found.*pixel3.*v100_1"):
        load_help(small_help, "nope")
    with pytest.raises(ValueError, match="'pixel3' not found.*for space 'ofa_mobilenetv3'"):
        load_help(small_help, "pixel3", space="ofa_mobilenetv3")
    with pytest.raises(ValueError, match="space must be None or one of"):
        load_help(small_help, "pixel3", space="ofa")


def test_help_corrupt_rows_are_named(small_help, tmp_path):
    fb = pd.read_csv(small_help / "fbnet_latency.csv")
    fb.loc[5, "layer07"] = "k4_e9"
    fb.to_csv(tmp_path / "fb.csv", index=False)
    with pytest.raises(ValueError, match=r"fb\.csv: row 5 .*invalid architecture.*'kernel_size'"):
        load_help(tmp_path / "fb.csv", "pixel3")
    fb.loc[5, "layer07"] = "conv"
    fb.to_csv(tmp_path / "fb.csv", index=False)
    with pytest.raises(ValueError, match=r"fb\.csv: row 5 .*column 'layer07' has operation 'conv'"):
        load_help(tmp_path / "fb.csv", "pixel3")
    ofa = pd.read_csv(small_help / "ofa_latency.csv")
    ofa.loc[3, "d2"] = 5
    ofa.to_csv(tmp_path / "ofa.csv", index=False)
    with pytest.raises(ValueError, match=r"ofa\.csv: row 3 .*unit 2: depth 5"):
        load_help(tmp_path / "ofa.csv", "v100_1")
    ofa = pd.read_csv(small_help / "ofa_latency.csv")
    ofa.loc[8, "v100_1"] = -2.0
    ofa.to_csv(tmp_path / "ofa.csv", index=False)
    with pytest.raises(ValueError, match=r"ofa\.csv: row 8 \(line 10\): column 'v100_1'"):
        load_help(tmp_path / "ofa.csv", "v100_1")


def test_help_rejects_foreign_files_and_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_help(tmp_path / "nowhere", "pixel3")
    foreign = _write(pd.read_csv(bundled_path("h200_resnet_b32"), nrows=3), tmp_path, "h200.csv")
    with pytest.raises(ValueError, match=r"h200\.csv: not a HELP latency table"):
        load_help(foreign, "latency_ms")
    with pytest.raises(ValueError, match="no HELP latency table"):
        list_help_devices(tmp_path)


# ------------------------------------------- bundled HELP copy (issue 9, item 12)
def test_help_tables_are_bundled_gzipped_with_licence_and_small():
    files = sorted(p.name for p in HELP.iterdir())
    assert files == ["LICENSE", "README.md", "fbnet_latency.csv.gz", "ofa_latency.csv.gz"]
    assert "MIT" in (HELP / "LICENSE").read_text() and "HayeonLee/HELP" in (HELP / "README.md").read_text()
    size = sum(p.stat().st_size for p in HELP.glob("*.gz"))
    assert 1_000_000 < size < 2_000_000  # about 1.7 MB
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"data/help/*.csv.gz"' in pyproject and '"data/help/LICENSE"' in pyproject


def test_load_help_needs_no_path_and_path_reads_another_copy(small_help):
    bundled = load_help(device="2080ti_1", space="fbnet")
    assert bundled.space == "fbnet" and len(bundled.data) == 5000
    assert bundled.filename.endswith("fbnet_latency.csv.gz") and "MIT" in bundled.DESCR
    assert load_help("pixel3").space == "fbnet"  # a device name alone
    assert "v100_1" in list_help_devices() and "pixel3" not in list_help_devices("ofa_mobilenetv3")
    other = load_help(device="2080ti_1", space="fbnet", path=small_help)
    assert len(other.data) == 12 and other.filename == str(small_help / "fbnet_latency.csv")
    np.testing.assert_array_equal(other.target, bundled.target[:12])
    with pytest.raises(ValueError, match="device 'nope' not found in the bundled HELP tables"):
        load_help(device="nope")
    with pytest.raises(ValueError, match="needs device="):
        load_help(space="fbnet")


@needs_shared_help
def test_bundled_help_equals_the_shared_copy():
    for name in ("ofa_latency.csv", "fbnet_latency.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(HELP / f"{name}.gz"),
                                      pd.read_csv(SHARED_HELP / name))


# ---------------------------------- extreme numbers in tables (issue 9, hardening)
@pytest.mark.parametrize("value", ["inf", "-inf", "1e308", "1e-320", "-2.5", "0", "nan", "", "fast"])
def test_extreme_latencies_are_refused_with_row_and_plain_value(tmp_path, value):
    frame = pd.read_csv(bundled_path("h200_resnet_b32"), nrows=4)
    frame["latency_ms"] = frame["latency_ms"].astype(object)
    frame.loc[2, "latency_ms"] = value
    path = _write(frame, tmp_path, "t.csv")
    with pytest.raises(ValueError, match=r"t\.csv: row 2 \(line 4\): column 'latency_ms'.*between") as info:
        load_latency_table(path)
    assert "np." not in str(info.value) and "array(" not in str(info.value)
