"""Inputs and outputs of the ``esm-sklearn`` command (used only by :mod:`esm_sklearn.cli`).

Outputs never destroy inputs: an output path that is an input of the command
(store, table, model, architectures; also through another path or a symlink)
or a SQLite database is refused before any work, and every output file is
written to a temporary name and renamed. Model files are pickles, read only
through :func:`_load_model`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def get_space(name):
    from .spaces import get_space as _get_space

    return _get_space(name)


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _is_pickle(head: bytes) -> bool:
    # joblib.dump writes a plain pickle: protocol 2..5 starts with 0x80 <protocol>.
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _check_output(path, option: str, inputs=(), model: bool = False) -> Path:
    """Refuse an output path that would destroy an input or a file that is not ours.

    Runs before any work. ``inputs``: (option, path) pairs of the command's
    inputs. ``model``: the output is a model, which may replace a previous model
    (a pickle) but nothing else; other outputs may replace anything but a
    store or a model. Creates the folder.
    """
    out = Path(path)
    for label, other in inputs:
        if other is not None and _same_file(out, Path(other)):
            raise ValueError(f"{option} {path} is the same file as {label} {other}; refusing to "
                             f"overwrite it (choose another {option})")
    if out.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name")
    if out.exists():
        try:
            with open(out, "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            raise ValueError(f"{option} {path}: cannot read it ({exc.strerror})") from None
        if head.startswith(_SQLITE_MAGIC):
            raise ValueError(f"{option} {path} is a SQLite database (a measurement store?); "
                             "refusing to overwrite it")
        if model and not _is_pickle(head):
            raise ValueError(f"{option} {path} exists and is not a model file (not a pickle); "
                             "refusing to overwrite it: remove it or choose another name")
        if not model and _is_pickle(head):
            raise ValueError(f"{option} {path} is a model file (a pickle); refusing to "
                             "overwrite it with another kind of output")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {path}: {parent} is a file, not a folder")
            break
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot create its folder ({exc.strerror})") from None
    if not os.access(out.parent, os.W_OK):
        raise ValueError(f"{option} {path}: the folder {out.parent} is not writable")
    return out


def _check_plot_dir(path, option: str = "--plots") -> Path:
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option} {path} is a file; give a folder for the figures")
    _check_output(folder / "predicted_vs_measured.png", option)
    return folder


def _atomic_write(path: Path, write) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path``: readers never see half a file."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _open_store(path):
    """The store of a measuring command, refused before any timing when it cannot be written."""
    from .store import MeasurementStore

    store = MeasurementStore(path)
    if store.read_only:
        store.close()
        raise ValueError(f"--store {path} cannot be written (read-only file, folder or media); "
                         "it can still be read and exported from Python: give a writable --store")
    return store


def _load_table(table=None, help_data=None, help_device=None, help_space=None):
    """The latency table of ``--table`` (bundled name or CSV) or of the HELP options."""
    from .datasets import list_bundled, load_bundled, load_help, load_latency_table

    uses_help = any(v is not None for v in (help_data, help_device, help_space))
    if table is not None and uses_help:
        raise ValueError("give either --table or the --help-* options, not both")
    if uses_help:
        if not help_device:
            raise ValueError("a HELP replay needs --help-target-device (a device column, e.g. "
                             "2080ti_1; see esm_sklearn.datasets.list_help_devices())")
        return load_help(help_data, help_device, space=help_space)
    if table is None:
        raise ValueError("give --table NAME_OR_CSV or --help-target-device DEV")
    if Path(table).is_file():
        return load_latency_table(table)
    names = list_bundled()
    if table.removesuffix(".csv") in names:
        return load_bundled(table)
    raise FileNotFoundError(
        f"--table {table!r} is neither a CSV file nor a bundled table (bundled: {', '.join(names)})"
    )


def _table_label(data) -> str:
    name = Path(data.filename).name.removesuffix(".gz").removesuffix(".csv")
    device = data.get("device")
    return f"{name} [{device}]" if device else name


def _load_model(path):
    """A fitted predictor saved with joblib (anything with ``predict``). Runs pickle code."""
    import joblib

    if not Path(path).is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(_SQLITE_MAGIC):
        raise ValueError(f"{path}: is a SQLite database (a measurement store?), not a model file")
    try:
        model = joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means: not a model file
        raise ValueError(f"{path}: not a model saved with joblib ({type(exc).__name__}: {exc})") from None
    if not callable(getattr(model, "predict", None)):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not a predictor (no predict method)")
    return model


def _model_space(model):
    """The search space a fitted predictor was trained on, or None when it does not say."""
    from .spaces import SearchSpace

    for candidate in (model, getattr(model, "estimator_", None)):
        if candidate is None:
            continue
        space = getattr(candidate, "space_", None)
        if isinstance(space, SearchSpace):
            return space
        steps = getattr(candidate, "steps", None)
        if steps:
            space = getattr(steps[0][1], "space_", None)
            if isinstance(space, SearchSpace):
                return space
    return None


def _predict(model, archs):
    import numpy as np

    if not archs:
        return np.zeros(0)
    pred = np.asarray(model.predict(archs), dtype=float)
    if pred.ndim == 2 and pred.shape[1] == 1:
        pred = pred[:, 0]
    return pred


def _read_archs(path: str, space) -> list[dict]:
    """Architectures from a JSON-lines file (``-``: standard input), validated.

    Blank lines are skipped; an input without any architecture is an error.
    """
    name = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            lines = sys.stdin.read().removeprefix("\ufeff").splitlines()
        else:
            with open(path, encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is skipped
                lines = fh.read().splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"architecture file not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{name} is a folder; expected a file of JSON lines") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    archs = []
    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        try:
            arch = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name} line {lineno}: not valid JSON ({exc.msg}): {text[:80]!r}") from None
        except RecursionError:
            raise ValueError(f"{name} line {lineno}: JSON nested too deeply to be an "
                             "architecture") from None
        if not isinstance(arch, dict):
            raise ValueError(
                f"{name} line {lineno}: expected an architecture (a JSON object), got "
                f"{type(arch).__name__} {text[:80]!r}"
            )
        try:
            line_space = space if space is not None else get_space(arch.get("space"))
            archs.append(line_space.validate(arch))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name} line {lineno}: {exc}") from None
        except RecursionError:
            raise ValueError(f"{name} line {lineno}: architecture nested too deeply") from None
    if not archs:
        raise ValueError(f"{name}: no architecture in it (expected one JSON object per line)")
    return archs
