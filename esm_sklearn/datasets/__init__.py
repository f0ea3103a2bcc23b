"""Latency tables as scikit-learn ``Bunch`` objects.

- :func:`load_latency_table`: any CSV in the ``shared/datasets/h200`` format
  (one architecture per row, column ``arch`` as JSON, latency columns in ms).
- :func:`list_bundled`, :func:`load_bundled`, :func:`bundled_path`: the tables
  shipped inside the package (``"h200_resnet_b1"``, ...; a table named
  ``<device>_<space>_b<batch>.csv`` in ``esm_sklearn/datasets/data`` is listed
  automatically).
- :func:`load_help`, :func:`list_help_devices`: the HELP tables (FBNet and
  OFA-MobileNetV3 architectures timed on many devices), shipped gzipped in
  ``esm_sklearn/datasets/data/help`` (MIT licence, source in its README);
  ``path=`` reads another copy.

Every loader returns ``data`` (list of canonical architecture dicts, validated
by their space), ``target`` (float64 latencies in ms) and ``frame`` (the table).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from .._validation import LATENCY_RANGE_MS, plain
from ..spaces import get_space

__all__ = [
    "LATENCY_RANGE_MS",
    "help_dir",
    "load_latency_table",
    "list_bundled",
    "load_bundled",
    "bundled_path",
    "load_help",
    "list_help_devices",
]

_SIDE_SUFFIXES = {"references": "_references", "lut": "_lut"}


# ------------------------------------------------------------------ helpers
def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV table: {exc}") from None


def _check_file(path) -> Path:
    if not isinstance(path, (str, Path)):
        raise ValueError(f"path must be a str or pathlib.Path, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a CSV file")
    return path


def _row(i: int) -> str:
    # The header is line 1, so data row i (0-based) is on line i + 2.
    return f"row {i} (line {i + 2})"


def _check_target(path: Path, values: pd.Series, column: str) -> np.ndarray:
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    low, high = LATENCY_RANGE_MS
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(numeric) | (numeric < low) | (numeric > high)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: {_row(i)}: column {column!r} has value {plain(values.iloc[i])}; "
            f"latencies must be finite numbers > 0, in ms between {low:g} and {high:g} "
            f"({int(bad.sum())} bad row(s) in all)"
        )
    return numeric


def _arch_json(arch: dict) -> str:
    return json.dumps(arch, separators=(",", ":"))


def _readme_text(folder: Path) -> str:
    readme = folder / "README.md"
    try:
        return readme.read_text(encoding="utf-8")
    except OSError:
        return ""


# ------------------------------------------------------------ latency tables
def load_latency_table(path: str | Path, target: str = "latency_ms") -> Bunch:
    """Load a latency table: one architecture per row, as in ``shared/datasets/h200``.

    Parameters
    ----------
    path : str or Path
        CSV file with a column ``arch`` (the architecture as JSON), the latency
        column ``target`` and optionally ``space`` (default: the ``"space"``
        field of each architecture). All rows must be of one space.
    target : str
        Column used as target, in ms (e.g. ``"latency_ms"``, ``"median_ms"``).

    Returns
    -------
    sklearn.utils.Bunch
        ``data``: list of canonical architecture dicts; ``target``: float64
        array of latencies in ms; ``frame``: the table as read; ``space``: the
        space name; ``references``: the sibling ``<stem>_references.csv`` as a
        DataFrame, or None; ``lut``: path (str) of the sibling
        ``<stem>_lut.csv``, or None; ``filename``; ``target_name``; ``DESCR``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For a missing column, invalid JSON, an architecture its space rejects,
        a non-positive or missing latency, or several spaces, naming the file
        and the row.

    Examples
    --------
    >>> from esm_sklearn.datasets import bundled_path, load_latency_table
    >>> table = load_latency_table(bundled_path("h200_resnet_b32"))
    >>> len(table.data), table.space, table.target.dtype
    (130, 'resnet', dtype('float64'))
    """
    path = _check_file(path)
    frame = _read_csv(path)
    required = ["arch", target]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        columns = set(frame.columns)
        hint = ""
        if "arch" in missing and any(set(c) <= columns for c in _HELP_SPACES.values()):
            hint = "; this looks like a HELP table, use load_help()"
        raise ValueError(
            f"{path}: missing column(s) {missing}; a latency table needs 'arch' (JSON) and the "
            f"target column {target!r}; found columns {list(frame.columns)}{hint}"
        )
    if len(frame) == 0:
        raise ValueError(f"{path}: the table has no rows")

    raw_archs = []
    for i, text in enumerate(frame["arch"]):
        if not isinstance(text, str):
            raise ValueError(f"{path}: {_row(i)}: column 'arch' is empty or not JSON text: {plain(text)}")
        try:
            arch = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: {_row(i)}: column 'arch' is not valid JSON ({exc})") from None
        if not isinstance(arch, dict):
            raise ValueError(f"{path}: {_row(i)}: column 'arch' must hold a JSON object, got {text!r}")
        raw_archs.append(arch)

    if "space" in frame.columns:
        names = frame["space"].tolist()
        where = "column 'space'"
    else:
        names = [a.get("space") for a in raw_archs]
        where = "the architectures' 'space' field"
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise ValueError(f"{path}: {_row(i)}: no space named in {where} (got {plain(name)})")
    distinct = list(dict.fromkeys(names))
    if len(distinct) > 1:
        i = names.index(distinct[1])
        raise ValueError(
            f"{path}: mixes several search spaces {distinct} in {where} "
            f"(first {distinct[1]!r} at {_row(i)}); a table must hold one space"
        )
    try:
        space = get_space(distinct[0])
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None

    data = space.validate_many(raw_archs, lambda i: f"{path}: {_row(i)}: invalid architecture")
    y = _check_target(path, frame[target], target)

    stem = path.stem
    references_path = path.with_name(f"{stem}_references.csv")
    lut_path = path.with_name(f"{stem}_lut.csv")
    references = _read_csv(references_path) if references_path.is_file() else None
    lut = str(lut_path) if lut_path.is_file() else None

    summary = (
        f"Latency table {stem!r}: {len(data)} architectures of space {space.name!r}, "
        f"target {target!r} (ms), from {path}."
    )
    readme = _readme_text(path.parent)
    return Bunch(
        data=data,
        target=y,
        frame=frame,
        space=space.name,
        references=references,
        lut=lut,
        filename=str(path),
        target_name=target,
        DESCR=summary + ("\n\n" + readme if readme else ""),
    )


# ---------------------------------------------------------- bundled tables
def _data_dir() -> Path:
    return Path(str(resources.files("esm_sklearn.datasets").joinpath("data")))


def list_bundled() -> list[str]:
    """Names of the latency tables shipped with the package, sorted.

    Every ``<name>.csv`` in ``esm_sklearn/datasets/data`` counts, except the
    side files ``<name>_references.csv`` and ``<name>_lut.csv``.

    Examples
    --------
    >>> "h200_resnet_b1" in list_bundled()
    True
    """
    names = []
    for file in _data_dir().glob("*.csv"):
        stem = file.stem
        if not stem.endswith(tuple(_SIDE_SUFFIXES.values())):
            names.append(stem)
    return sorted(names)


def _check_bundled_name(name) -> str:
    names = list_bundled()
    if isinstance(name, str) and name.endswith(".csv"):
        name = name[: -len(".csv")]
    if name not in names:
        raise ValueError(f"unknown bundled table {name!r}; bundled tables are {names}")
    return name


def bundled_path(name: str, kind: str = "table") -> Path:
    """Path of a bundled table or of one of its side files.

    Parameters
    ----------
    name : str
        A name from :func:`list_bundled`.
    kind : {"table", "references", "lut"}
        The table itself, its reference timings or its per-block lookup table.

    Raises
    ------
    ValueError
        For an unknown name or kind.
    FileNotFoundError
        If the table has no such side file (e.g. no lookup table at batch 32).
    """
    name = _check_bundled_name(name)
    if kind == "table":
        return _data_dir() / f"{name}.csv"
    if kind not in _SIDE_SUFFIXES:
        raise ValueError(f"kind must be 'table', 'references' or 'lut', got {kind!r}")
    path = _data_dir() / f"{name}{_SIDE_SUFFIXES[kind]}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"bundled table {name!r} has no {kind} file ({path.name})")
    return path


def load_bundled(name: str, target: str = "latency_ms") -> Bunch:
    """Load a bundled latency table (see :func:`list_bundled`); as :func:`load_latency_table`.

    Examples
    --------
    >>> table = load_bundled("h200_densenet_b1")
    >>> len(table.data), table.target.shape, table.lut is not None
    (206, (206,), True)
    """
    return load_latency_table(bundled_path(name), target=target)


# -------------------------------------------------------------- HELP tables
_OFA_UNITS, _OFA_SLOTS = 5, 4
_OFA_COLUMNS = (
    ["r"]
    + [f"d{u}" for u in range(_OFA_UNITS)]
    + [f"ks{j:02d}" for j in range(_OFA_UNITS * _OFA_SLOTS)]
    + [f"e{j:02d}" for j in range(_OFA_UNITS * _OFA_SLOTS)]
)
_FBNET_STAGES = (1, 4, 4, 4, 4, 4, 1)
_FBNET_COLUMNS = [f"layer{j:02d}" for j in range(sum(_FBNET_STAGES))]
_HELP_SPACES = {"ofa_mobilenetv3": _OFA_COLUMNS, "fbnet": _FBNET_COLUMNS}
# Columns that are neither architecture nor device (a saved pandas index).
_NON_DEVICE = {"index", "Unnamed: 0", "arch", "latency_ms", "space"}
_FBNET_OP = re.compile(r"k(\d+)_e(\d+)(?:_g(\d+))?")


def _help_space(path: Path, columns) -> str:
    columns = set(columns)
    found = [name for name, cols in _HELP_SPACES.items() if set(cols) <= columns]
    if len(found) != 1:
        raise ValueError(
            f"{path}: not a HELP latency table: expected the OFA columns (r, d0..d4, ks00..ks19, "
            "e00..e19) or the FBNet columns (layer00..layer21)"
        )
    return found[0]


def _help_devices(columns, space: str) -> list[str]:
    arch_columns = set(_HELP_SPACES[space])
    return [c for c in columns if c not in arch_columns and c not in _NON_DEVICE]


def help_dir() -> Path:
    """Folder of the bundled HELP tables (``ofa_latency.csv.gz``, ``fbnet_latency.csv.gz``).

    Examples
    --------
    >>> sorted(p.name for p in help_dir().glob("*.gz"))
    ['fbnet_latency.csv.gz', 'ofa_latency.csv.gz']
    """
    return _data_dir() / "help"


def _help_files(path: Path | None) -> dict[Path, tuple[str, list[str]]]:
    """{csv file: (space, device columns)} of a HELP file or folder (None: the bundled)."""
    if path is None:
        path = help_dir()
    if not isinstance(path, (str, Path)):
        raise ValueError(f"path must be a str or pathlib.Path, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"HELP table or folder not found: {path}")
    if path.is_dir():
        files = sorted([*path.glob("*.csv"), *path.glob("*.csv.gz")])
        out = {}
        for file in files:
            try:
                columns = list(_read_csv(file, nrows=0).columns)
                space = _help_space(file, columns)
            except ValueError:
                continue  # a foreign CSV in the folder
            out[file] = (space, _help_devices(columns, space))
        if not out:
            raise ValueError(f"{path}: no HELP latency table (ofa_latency.csv, fbnet_latency.csv) in this folder")
        return out
    columns = list(_read_csv(path, nrows=0).columns)
    space = _help_space(path, columns)
    return {path: (space, _help_devices(columns, space))}


def _check_help_space(space) -> None:
    if space is not None and space not in _HELP_SPACES:
        raise ValueError(f"space must be None or one of {sorted(_HELP_SPACES)}, got {space!r}")


def list_help_devices(path: str | Path | None = None, space: str | None = None) -> list[str]:
    """Sorted device columns of a HELP table, or of every table in a HELP folder.

    Parameters
    ----------
    path : str or Path, optional
        A HELP folder or one of its CSV files; default: the bundled tables.
    space : {"ofa_mobilenetv3", "fbnet"}, optional
        Only the devices of this space's table.

    Examples
    --------
    >>> devices = list_help_devices(space="ofa_mobilenetv3")
    >>> "2080ti_1" in devices, "pixel3" in devices
    (True, False)
    """
    if space is None and isinstance(path, str) and path in _HELP_SPACES:
        path, space = None, path  # list_help_devices("fbnet")
    _check_help_space(space)
    files = _help_files(path)
    devices = set()
    for file_space, file_devices in files.values():
        if space is None or file_space == space:
            devices.update(file_devices)
    return sorted(devices)


def _ofa_archs(path: Path, frame: pd.DataFrame) -> list[dict]:
    for column in _OFA_COLUMNS:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise ValueError(f"{path}: OFA column {column!r} must hold numbers")
    archs = []
    n_slots = _OFA_UNITS * _OFA_SLOTS
    for row in frame[_OFA_COLUMNS].to_numpy().tolist():
        r, depth = row[0], row[1 : 1 + _OFA_UNITS]
        ks, er = row[1 + _OFA_UNITS : 1 + _OFA_UNITS + n_slots], row[1 + _OFA_UNITS + n_slots :]
        # Slots at positions >= depth are filler in HELP's encoding: dropped. A depth
        # outside 0..4 keeps no slot and is then reported by the space's validation.
        used = [int(d) if float(d).is_integer() and 0 <= d <= _OFA_SLOTS else 0 for d in depth]
        archs.append(
            {
                "space": "ofa_mobilenetv3",
                "depth": depth,
                "kernel_size": [ks[_OFA_SLOTS * u : _OFA_SLOTS * u + d] for u, d in enumerate(used)],
                "expand_ratio": [er[_OFA_SLOTS * u : _OFA_SLOTS * u + d] for u, d in enumerate(used)],
                "resolution": r,
            }
        )
    return archs


def _fbnet_archs(path: Path, frame: pd.DataFrame) -> list[dict]:
    ops = frame[_FBNET_COLUMNS].to_numpy()
    archs = []
    for i, row in enumerate(ops.tolist()):
        arch = {"space": "fbnet", "depth": [], "kernel_size": [], "expand_ratio": [], "groups": []}
        start = 0
        for n_layers in _FBNET_STAGES:
            ks, er, gr = [], [], []
            for j in range(start, start + n_layers):
                op = row[j]
                if op == "skip":
                    continue
                match = _FBNET_OP.fullmatch(op) if isinstance(op, str) else None
                if match is None:
                    raise ValueError(
                        f"{path}: {_row(i)}: column {_FBNET_COLUMNS[j]!r} has operation {op!r}; "
                        "expected 'skip' or 'k<kernel>_e<expand>[_g<groups>]'"
                    )
                ks.append(int(match[1]))
                er.append(int(match[2]))
                gr.append(int(match[3]) if match[3] else 1)
            start += n_layers
            arch["depth"].append(len(ks))
            arch["kernel_size"].append(ks)
            arch["expand_ratio"].append(er)
            arch["groups"].append(gr)
        archs.append(arch)
    return archs


def load_help(path: str | Path | None = None, device: str | None = None,
              space: str | None = None) -> Bunch:
    """Load one device's latencies from the HELP tables.

    The tables ship with the package (gzipped; MIT licence, from the HELP
    repository: see ``esm_sklearn/datasets/data/help/README.md``), so
    ``load_help(device=..., space=...)`` needs no path.

    Parameters
    ----------
    path : str or Path, optional
        Another copy: a HELP folder (with ``ofa_latency.csv`` and
        ``fbnet_latency.csv``, optionally gzipped) or one of its CSV files. The
        space of a file is told apart by its columns. Default: the bundled tables.
    device : str
        A device column, e.g. ``"titan_rtx_1"`` or ``"pixel3"``; see
        :func:`list_help_devices`. ``load_help("pixel3")`` also works.
    space : {"ofa_mobilenetv3", "fbnet"}, optional
        Needed when both tables have ``device`` (e.g. ``"2080ti_1"``).

    Returns
    -------
    sklearn.utils.Bunch
        ``data`` (canonical architecture dicts: OFA's unused block slots
        dropped, FBNet's ``skip`` layers removed from their stage), ``target``
        (float64 ms), ``frame`` (the file's columns plus ``arch`` as JSON and
        ``latency_ms``), ``space``, ``device``, ``filename``, ``DESCR``.

    Raises
    ------
    ValueError
        For an unknown or ambiguous device (listing the available ones), a file
        that is no HELP table, or a row whose architecture or latency is
        invalid (naming file and row).

    Examples
    --------
    >>> table = load_help(device="titan_rtx_1", space="ofa_mobilenetv3")
    >>> len(table.data), table.space, table.target.dtype
    (5000, 'ofa_mobilenetv3', dtype('float64'))
    """
    if device is None and isinstance(path, str) and not Path(path).exists():
        path, device = None, path  # load_help("pixel3")
    if not isinstance(device, str) or not device:
        raise ValueError(f"load_help needs device=, a device column such as 'titan_rtx_1' "
                         f"(see list_help_devices()); got {plain(device)}")
    _check_help_space(space)
    files = _help_files(path)
    matches = [
        (file, file_space)
        for file, (file_space, devices) in files.items()
        if device in devices and (space is None or file_space == space)
    ]
    if not matches:
        available = "; ".join(
            f"{file.name} ({file_space}): {sorted(devices)}"
            for file, (file_space, devices) in files.items()
            if space is None or file_space == space
        )
        raise ValueError(
            f"device {device!r} not found in {path if path is not None else 'the bundled HELP tables'}"
            + (f" for space {space!r}" if space else "")
            + f"; available devices: {available or 'none'}"
        )
    if len(matches) > 1:
        raise ValueError(
            f"device {device!r} is in several HELP tables "
            f"{[f'{file.name} ({file_space})' for file, file_space in matches]}; "
            "pass space='ofa_mobilenetv3' or space='fbnet', or the path of one file"
        )
    file, space_name = matches[0]
    frame = _read_csv(file)
    if len(frame) == 0:
        raise ValueError(f"{file}: the table has no rows")
    raw = _ofa_archs(file, frame) if space_name == "ofa_mobilenetv3" else _fbnet_archs(file, frame)
    space_obj = get_space(space_name)
    data = space_obj.validate_many(raw, lambda i: f"{file}: {_row(i)}: invalid architecture")
    y = _check_target(file, frame[device], device)
    frame = frame.copy()
    frame["arch"] = [_arch_json(a) for a in data]
    frame["latency_ms"] = y
    summary = (
        f"HELP latency table {file.name}: {len(data)} architectures of space {space_name!r} "
        f"measured on {device!r} (ms), from {file}."
    )
    readme = _readme_text(file.parent)
    return Bunch(
        data=data,
        target=y,
        frame=frame,
        space=space_name,
        device=device,
        filename=str(file),
        target_name=device,
        DESCR=summary + ("\n\n" + readme if readme else ""),
    )
