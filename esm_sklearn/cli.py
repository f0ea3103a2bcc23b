"""The ``esm-sklearn`` command: list spaces, sample, collect, fit, evaluate, predict.

Each subcommand is a ``_cmd_<name>(args)`` function registered in ``_build_parser``.
"""

from __future__ import annotations

import argparse
import json
import sys

from .spaces import get_space, list_spaces


def _cmd_spaces(args) -> int:
    for name in list_spaces():
        space = get_space(name)
        print(
            f"{name:16s} units={space.n_units} depth={space.min_depth}..{space.max_depth} "
            f"size={space.size():.3g}  {space.description}"
        )
    return 0


def _cmd_sample(args) -> int:
    space = get_space(args.space)
    archs = space.sample(
        args.n, strategy=args.strategy, n_bins=args.n_bins, random_state=args.seed
    )
    out = open(args.out, "w") if args.out else sys.stdout
    try:
        for arch in archs:
            out.write(json.dumps(arch) + "\n")
    finally:
        if args.out:
            out.close()
    return 0


def _collect_archs(space, n: int, strategy: str, n_bins: int, seed) -> tuple[list, list]:
    """The seeded architectures of ``collect`` and their sampling labels.

    ``mixed``: half balanced, half random (distinct), interleaved so that any
    prefix of the collection is half/half too.
    """
    if strategy != "mixed":
        archs = space.sample(n, strategy=strategy, n_bins=n_bins, random_state=seed, unique=True)
        return archs, [strategy] * len(archs)
    import numpy as np

    rng = np.random.RandomState(seed)
    balanced = space.sample(n - n // 2, strategy="balanced", n_bins=n_bins, random_state=rng,
                            unique=True)
    rand = space.sample(n // 2, strategy="random", random_state=rng, exclude=balanced)
    archs, labels = [], []
    for i in range(len(balanced)):
        archs.append(balanced[i])
        labels.append("balanced")
        if i < len(rand):
            archs.append(rand[i])
            labels.append("random")
    return archs, labels


def _cmd_collect(args) -> int:
    from .oracle import TorchLatencyOracle
    from .store import MeasurementStore

    space = get_space(args.space)
    if args.n < 0:
        raise ValueError(f"--n must be >= 0, got {args.n}")
    archs, labels = _collect_archs(space, args.n, args.strategy, args.n_bins, args.seed)
    oracle = TorchLatencyOracle(
        device=args.device, batch_size=args.batch_size, resolution=args.resolution,
        warmup=args.warmup, runs=args.runs, trim=args.trim, n_references=args.n_references,
        check_every=args.check_every or None, variance_threshold=args.variance_threshold,
        max_retries=args.max_retries, threads=args.threads, store=args.store,
        random_state=args.seed, progress=not args.no_progress,
    )
    try:
        if archs:
            oracle.measure(archs, space=space, sampling=labels)
        if args.profile_blocks:
            lut = oracle.profile_blocks(space, resolution=args.resolution)
            lut.to_csv(args.profile_blocks, index=False)
            print(f"profiled {len(lut)} blocks -> {args.profile_blocks}")
    except KeyboardInterrupt:
        key = getattr(oracle, "setting_key_", None)
        with MeasurementStore(args.store) as store:
            n_done = len(store.measured_keys(key)) if key else 0
        print(
            f"\ninterrupted: {n_done} architectures of this setting are safely in {args.store}; "
            "run the same command again to resume (measured architectures are skipped).",
            file=sys.stderr,
        )
        return 130
    if archs:
        s, info = oracle.summary_, oracle.device_info_
        print(
            f"collect {space.name} on {info['name']} ({info['type']}, {info['threads']} threads, "
            f"batch {info['batch_size']}, resolution {info['resolution'] or 'per arch'})"
        )
        per_arch = s["seconds_per_arch"]
        per_arch = f"{per_arch:.3f} s per timed arch" if per_arch == per_arch else "nothing timed"
        print(
            f"  measured {s['n_measured']}, failed {s['n_failed']}, skipped (already in store) "
            f"{s['n_skipped']}, re-timed for QC {s['n_retimed']}; {s['seconds']:.1f} s, {per_arch}"
        )
        check = oracle.qc_check_
        if check is None:
            print("  QC: not run (no reference rounds)")
        else:
            verdict = "passed" if check.passed else "FAILED"
            spreads = ", ".join(
                f"ref {int(r.ref_id)}: {getattr(r, check.statistic):.2%} ({int(r.n_rounds)} rounds)"
                for r in check.spread.itertuples()
            )
            print(f"  QC {verdict} ({check.statistic} threshold {check.threshold:.1%}): {spreads}")
            n_retry = int((~oracle.qc_["passed"]).sum()) if len(oracle.qc_) else 0
            if n_retry:
                print(f"  {n_retry} QC round(s) of this session failed (see the store's "
                      "reference rows)")
        print(f"  store: {args.store} (setting {oracle.setting_key_[:12]})")
        if args.export:
            with MeasurementStore(args.store) as store:
                store.export_csv(args.export, setting_key=oracle.setting_key_)
            print(f"  exported -> {args.export} (+ _references.csv)")
    return 0


# ------------------------------------------------------ fit / predict / evaluate
# Paper defaults (N_Test, N_I, N_Step) and, for a replayed table too small for them,
# the share of the table each one takes instead.
_LOOP_SIZES = {"n_test": (200, 0.2), "n_initial": (300, 0.4), "n_step": (100, 0.1)}
# Options of the device oracle: (argparse dest, TorchLatencyOracle parameter).
_ORACLE_OPTIONS = (("resolution", "resolution"), ("runs", "runs"), ("warmup", "warmup"),
                   ("threads", "threads"), ("batch_size", "batch_size"),
                   ("n_references", "n_references"), ("check_every", "check_every"))


def _load_table(table=None, help_table=None, help_device=None, help_space=None):
    """The latency table of ``--table`` (bundled name or CSV) or ``--help-table``/``--help-device``."""
    from pathlib import Path

    from .datasets import list_bundled, load_bundled, load_help, load_latency_table

    if table is not None and help_table is not None:
        raise ValueError("give either --table or --help-table, not both")
    if help_table is not None:
        if not help_device:
            raise ValueError("--help-table needs --help-device (a device column, e.g. 2080ti_1)")
        return load_help(help_table, help_device, space=help_space)
    if help_device is not None or help_space is not None:
        raise ValueError("--help-device/--help-space need --help-table DIR")
    if table is None:
        raise ValueError("give --table NAME_OR_CSV or --help-table DIR --help-device DEV")
    if Path(table).is_file():
        return load_latency_table(table)
    names = list_bundled()
    if table.removesuffix(".csv") in names:
        return load_bundled(table)
    raise FileNotFoundError(
        f"--table {table!r} is neither a CSV file nor a bundled table (bundled: {', '.join(names)})"
    )


def _table_label(data) -> str:
    from pathlib import Path

    name = Path(data.filename).stem
    device = data.get("device")
    return f"{name} [{device}]" if device else name


def _load_model(path):
    """A fitted predictor saved with joblib (anything with ``predict``)."""
    from pathlib import Path

    import joblib

    if not Path(path).is_file():
        raise FileNotFoundError(f"model file not found: {path}")
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

    pred = np.asarray(model.predict(archs), dtype=float)
    if pred.ndim == 2 and pred.shape[1] == 1:
        pred = pred[:, 0]
    return pred


def _pct(value) -> str:
    return "   n/a" if value != value else f"{100 * value:5.1f}%"


def _format_bins(table, threshold=None, train_counts=None) -> str:
    """The per-bin accuracy table as text (``table`` from :func:`binwise_accuracy`)."""
    header = "  bin  depth    test n  train n" if train_counts is not None else "  bin  depth         n"
    lines = [header + "  accuracy  within 10%"]
    for row in table.itertuples():
        acc = row.accuracy
        flag = "  < threshold" if threshold is not None and acc == acc and acc < threshold else ""
        train = f"  {int(train_counts[row.bin]):7d}" if train_counts is not None else ""
        lines.append(
            f"  {row.bin:3d}  {row.depth_low:3d}-{row.depth_high:<3d}  {row.count:6d}{train}"
            f"    {_pct(acc)}      {_pct(row.within_10)}{flag}"
        )
    return "\n".join(lines)


def _format_history(history, n_bins: int) -> str:
    lines = ["  iter  samples  added  accuracy  worst bin  " + " ".join(
        f"bin{b:<3d}" for b in range(n_bins)) + "  below      measure s  fit s"]
    for row in history.to_dict("records"):
        accs = [row[f"acc_bin{b}"] for b in range(n_bins)]
        finite = [a for a in accs if a == a]
        worst = min(finite) if finite else float("nan")
        below = ",".join(str(b) for b in row["below_bins"]) or "-"
        lines.append(
            f"  {row['iteration']:4d}  {row['n_samples']:7d}  {row['n_added']:5d}    "
            f"{_pct(row['accuracy'])}     {_pct(worst)}  "
            + " ".join(_pct(a) for a in accs)
            + f"  {below:9s}  {row['measure_seconds']:8.1f}  {row['fit_seconds']:5.1f}"
        )
    return "\n".join(lines)


def _scores_line(y_true, y_pred) -> str:
    from .metrics import kendall_tau, latency_accuracy, rmse, within_accuracy

    return (f"accuracy (1 - MAPE) {_pct(latency_accuracy(y_true, y_pred)).strip()}, "
            f"within +-10% {_pct(within_accuracy(y_true, y_pred, 0.1)).strip()}, "
            f"Kendall tau {kendall_tau(y_true, y_pred):.3f}, RMSE {rmse(y_true, y_pred):.4g} ms")


def _loop_sizes(args, n_pool: int | None) -> tuple[dict, list[str]]:
    """n_test, n_initial, n_step: as given, else the paper's; a replayed table
    too small for the paper's gets shares of its size (listed in the second value)."""
    sizes, scaled = {}, []
    for name, (paper, share) in _LOOP_SIZES.items():
        given = getattr(args, name)
        if given is not None:
            sizes[name] = given
        elif n_pool is not None and round(share * n_pool) < paper:
            sizes[name] = max(1, int(round(share * n_pool)))
            scaled.append(name)
        else:
            sizes[name] = paper
    return sizes, scaled


def _cmd_fit(args) -> int:
    import time
    from pathlib import Path

    import joblib
    import numpy as np

    from .active import ActiveLatencyEstimator
    from .metrics import binwise_accuracy
    from .predictors import make_latency_pipeline
    from .quality import ReferenceCheck
    from .spaces import arch_key
    from .store import MeasurementStore

    replay = args.table is not None or args.help_table is not None
    if replay:
        device_opts = [("--device", args.device), ("--store", args.store)] + [
            ("--" + dest.replace("_", "-"), getattr(args, dest)) for dest, _ in _ORACLE_OPTIONS]
        given = [opt for opt, value in device_opts if value is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} only apply when measuring on a device; a replay "
                "(--table / --help-table) measures nothing"
            )
        data = _load_table(args.table, args.help_table, args.help_device, args.help_space)
        space = get_space(data.space)
        if args.space is not None and get_space(args.space).name != space.name:
            raise ValueError(f"--space {args.space} does not match the table's space {space.name!r}")
        n_pool = len({arch_key(a) for a in data.data})
        source = f"replay of {_table_label(data)} ({len(data.data)} rows, {n_pool} distinct architectures)"
    else:
        if args.help_device is not None or args.help_space is not None:
            raise ValueError("--help-device/--help-space need --help-table DIR")
        if args.space is None:
            raise ValueError(
                "give --space (and --device) to measure architectures on a device, or "
                "--table / --help-table to replay a measured table"
            )
        space = get_space(args.space)
        n_pool = None
        device = args.device or "cpu"
        store_path = args.store or str(Path("runs") / f"{device.replace(':', '')}_{space.name}.sqlite")
        source = f"measuring on {device}, store {store_path}"
    if not 0 < args.acc_threshold <= 1:
        raise ValueError(
            f"--acc-threshold must be a fraction in (0, 1] (0.95 is 95%), got {args.acc_threshold}"
        )
    sizes, scaled = _loop_sizes(args, n_pool)
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as predictor.joblib")
    out.parent.mkdir(parents=True, exist_ok=True)

    pipeline = make_latency_pipeline(encoding=args.encoding, regressor=args.regressor,
                                     space=space, random_state=args.seed)
    params = dict(
        estimator=pipeline, space=space.name, strategy=args.strategy, weights=tuple(args.weights),
        evaluation=args.evaluation, n_bins=args.n_bins, acc_threshold=args.acc_threshold,
        max_iter=args.max_iter, max_samples=args.max_samples, random_state=args.seed,
        verbose=not args.no_progress, **sizes,
    )
    if not replay:
        oracle_params = {param: getattr(args, dest) for dest, param in _ORACLE_OPTIONS
                         if getattr(args, dest) is not None}
        if oracle_params.get("check_every") == 0:
            oracle_params["check_every"] = None  # only at start and end
        params.update(device=device, store=store_path, oracle_params=oracle_params)
    est = ActiveLatencyEstimator(**params)

    print(f"fit {space.name}: {source}")
    print(f"  predictor {args.encoding} + {args.regressor}, strategy {args.strategy}, "
          f"threshold {100 * args.acc_threshold:g}% ({args.evaluation}, {args.n_bins} bins), "
          f"n_test {sizes['n_test']}, n_initial {sizes['n_initial']}, n_step {sizes['n_step']}, "
          f"seed {args.seed}")
    if scaled:
        print(f"  ({', '.join(scaled)} scaled down from the paper's "
              f"{'/'.join(str(_LOOP_SIZES[n][0]) for n in scaled)} to fit the table; "
              "give them to override)", flush=True)
    start = time.perf_counter()
    rows_before = 0
    if not replay:
        with MeasurementStore(store_path) as store:
            rows_before = len(store.frame("arch"))
    try:
        if replay:
            est.fit(data.data, data.target)
        else:
            est.fit()
    except KeyboardInterrupt:
        if replay:
            print("\ninterrupted; nothing was saved", file=sys.stderr)
        else:
            with MeasurementStore(store_path) as store:
                n_new = len(store.frame("arch")) - rows_before
            print(f"\ninterrupted: the {n_new} architecture(s) measured in this session are safely "
                  f"in {store_path}; run the same command again to resume (measured "
                  "architectures are not timed again).", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - start
    joblib.dump(est, out)

    print("\nhistory (accuracy on the held-out test set):")
    print(_format_history(est.history_, args.n_bins))
    print(f"\nper-bin accuracy of the final predictor on the {len(est.X_test_)} held-out test "
          "architectures:")
    y_pred = est.predict(est.X_test_)
    bins = binwise_accuracy(est.y_test_, y_pred, est.X_test_, space=space, n_bins=args.n_bins)
    train_counts = np.bincount(space.bin_index(est.X_train_, args.n_bins), minlength=args.n_bins)
    print(_format_bins(bins, args.acc_threshold, train_counts))
    print(f"  all bins: {_scores_line(est.y_test_, y_pred)}")
    stop = {"threshold_reached": "every bin reached the threshold",
            "max_iter": "--max-iter reached", "max_samples": "--max-samples reached",
            "pool_exhausted": "no candidate architecture left"}[est.termination_condition_]
    print(f"\nstopped: {stop} ({est.termination_condition_}) after {est.n_iter_} extension(s); "
          f"{len(est.X_train_)} training + {len(est.X_test_)} test architectures"
          + (f", {est.n_failed_} failed" if est.n_failed_ else "") + f"; {seconds:.1f} s")
    if not replay:
        with MeasurementStore(store_path) as store:
            rows_after = len(store.frame("arch"))
        print(f"store {store_path}: {rows_after - rows_before} new measurement(s) this session, "
              f"{rows_after} architecture rows in all")
        if isinstance(est.qc_, ReferenceCheck):
            print(f"quality control: {est.qc_}")
    print(f"saved -> {out}")
    return 0


def _read_archs(path: str, space) -> list[dict]:
    """Architectures from a JSON-lines file (``-``: standard input), validated."""
    name = "<stdin>" if path == "-" else path
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            with open(path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            raise FileNotFoundError(f"architecture file not found: {path}") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name}: not a UTF-8 text file ({exc})") from None
    archs = []
    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        try:
            arch = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name} line {lineno}: not valid JSON ({exc.msg}): {text[:80]!r}") from None
        if not isinstance(arch, dict):
            raise ValueError(
                f"{name} line {lineno}: expected an architecture (a JSON object), got "
                f"{type(arch).__name__} {text[:80]!r}"
            )
        try:
            line_space = space if space is not None else get_space(arch.get("space"))
            archs.append(line_space.validate(arch))
        except ValueError as exc:
            raise ValueError(f"{name} line {lineno}: {exc}") from None
    if not archs:
        raise ValueError(f"{name}: no architecture in it (expected one JSON object per line)")
    return archs


def _cmd_predict(args) -> int:
    import csv

    model = _load_model(args.model)
    archs = _read_archs(args.archs, _model_space(model))
    pred = _predict(model, archs)
    if len(pred) != len(archs):
        raise ValueError(f"the model returned {len(pred)} predictions for {len(archs)} architectures")
    out = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout
    try:
        if args.csv:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(["arch", "latency_ms"])
            for arch, value in zip(archs, pred, strict=True):
                writer.writerow([json.dumps(arch, separators=(",", ":")), f"{value:.6g}"])
        else:
            for value in pred:
                out.write(f"{value:.6g}\n")
    finally:
        if args.out:
            out.close()
    return 0


def _cmd_evaluate(args) -> int:
    import numpy as np
    import pandas as pd

    from .metrics import binwise_accuracy
    from .spaces import arch_key

    model = _load_model(args.model)
    data = _load_table(args.table, args.help_table, args.help_device, args.help_space)
    space = _model_space(model)
    if space is not None and space.name != data.space:
        raise ValueError(
            f"the model predicts architectures of space {space.name!r}, the table holds {data.space!r}"
        )
    space = get_space(data.space)
    n_bins = args.n_bins if args.n_bins is not None else int(getattr(model, "n_bins", 5))
    pred = _predict(model, data.data)
    y = np.asarray(data.target, dtype=float)
    if len(pred) != len(y):
        raise ValueError(f"the model returned {len(pred)} predictions for {len(y)} architectures")
    train = getattr(model, "X_train_", None)
    seen = np.zeros(len(y), dtype=bool)
    if train is not None:
        train_keys = {arch_key(a) for a in train}
        seen = np.array([arch_key(a) in train_keys for a in data.data], dtype=bool)

    print(f"evaluate {args.model} on {_table_label(data)}: {len(y)} architectures of {space.name}")
    print(f"  all rows:  {_scores_line(y, pred)}")
    rows = np.ones(len(y), dtype=bool)
    if seen.any():
        rows = ~seen
        print(f"  {int(seen.sum())} of these architectures were in the model's training set")
        if rows.any():
            print(f"  the other {int(rows.sum())}: {_scores_line(y[rows], pred[rows])}")
        else:
            print("  every architecture was in the training set: these are training scores")
            rows = seen
    label = "the architectures not trained on" if seen.any() and not seen.all() else "all rows"
    archs = [a for a, keep in zip(data.data, rows, strict=True) if keep]
    table = binwise_accuracy(y[rows], pred[rows], archs, space=space, n_bins=n_bins)
    print(f"\nper-bin accuracy ({label}):")
    print(_format_bins(table, getattr(model, "acc_threshold", None)))
    if args.predictions:
        pd.DataFrame({"arch": [json.dumps(a, separators=(",", ":")) for a in data.data],
                      "latency_ms": y, "predicted_ms": pred, "in_training_set": seen,
                      }).to_csv(args.predictions, index=False)
        print(f"\npredictions -> {args.predictions}")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esm-sklearn", description="Build latency predictors for hardware-aware NAS."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("spaces", help="list the registered search spaces")
    p.set_defaults(func=_cmd_spaces)

    p = sub.add_parser("sample", help="write sampled architectures as JSON lines")
    p.add_argument("--space", required=True)
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--strategy", choices=["random", "balanced"], default="random")
    p.add_argument("--n-bins", type=int, default=5)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", help="file to write (default: standard output)")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser(
        "collect",
        help="time sampled architectures on a device into a store (resumable, Ctrl-C safe)",
    )
    p.add_argument("--space", required=True)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index>")
    p.add_argument("--n", type=int, default=100, help="architectures to sample")
    p.add_argument("--strategy", choices=["random", "balanced", "mixed"], default="balanced",
                   help="mixed: half balanced, half random")
    p.add_argument("--n-bins", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="seeds sampling and references")
    p.add_argument("--store", required=True, help="SQLite file; rerun to resume")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--runs", type=int, default=150)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--trim", type=float, default=0.2)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--n-references", type=int, default=4)
    p.add_argument("--check-every", type=int, default=150, help="0: only start and end")
    p.add_argument("--variance-threshold", type=float, default=0.03)
    p.add_argument("--max-retries", type=int, default=2)
    p.add_argument("--export", default=None, help="write the latency table CSV here")
    p.add_argument("--profile-blocks", default=None, metavar="CSV",
                   help="also profile every block alone and write the lookup table here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_collect)

    p = sub.add_parser(
        "fit",
        help="build a latency predictor with the train-evaluate-extend loop (measure or replay)",
        description="Measure on a device (--space, --device, --store; resumable) or replay a "
        "measured table (--table NAME_OR_CSV, or --help-table DIR --help-device DEV), "
        "stop when every depth bin reaches --acc-threshold, save the predictor (joblib).",
    )
    src = p.add_argument_group("what to learn from")
    src.add_argument("--table", default=None,
                     help="replay a bundled table (esm_sklearn.datasets.list_bundled()) or a CSV "
                     "in the shared/datasets/h200 format")
    src.add_argument("--help-table", default=None, metavar="DIR",
                     help="replay a HELP table (folder or CSV); needs --help-device")
    src.add_argument("--help-device", default=None, metavar="DEV", help="e.g. 2080ti_1")
    src.add_argument("--help-space", default=None, choices=["ofa_mobilenetv3", "fbnet"],
                     help="which HELP table, when the device is in both")
    src.add_argument("--space", default=None, help="search space to measure on a device")
    dev = p.add_argument_group("measuring on a device (not with a replay)")
    dev.add_argument("--device", default=None, help="cpu (default), cuda or cuda:<index>")
    dev.add_argument("--store", default=None,
                     help="SQLite file of every measurement; rerun to resume "
                     "(default runs/<device>_<space>.sqlite)")
    dev.add_argument("--resolution", type=int, default=None)
    dev.add_argument("--runs", type=int, default=None, help="timed runs per model (150)")
    dev.add_argument("--warmup", type=int, default=None, help="untimed runs first (10)")
    dev.add_argument("--threads", type=int, default=None)
    dev.add_argument("--batch-size", type=int, default=None)
    dev.add_argument("--n-references", type=int, default=None,
                     help="reference architectures for quality control (4; 0: off)")
    dev.add_argument("--check-every", type=int, default=None,
                     help="architectures between reference checks (150; 0: start and end)")
    loop = p.add_argument_group("the loop (ESM Algorithm 1)")
    loop.add_argument("--acc-threshold", type=float, default=0.95,
                      help="target 1 - MAPE per bin, a fraction (default 0.95)")
    loop.add_argument("--strategy", choices=["balanced", "random"], default="balanced")
    loop.add_argument("--evaluation", choices=["binwise", "overall"], default="binwise")
    loop.add_argument("--n-initial", type=int, default=None,
                      help="N_I (300; a replayed table too small for it: 40%% of its rows)")
    loop.add_argument("--n-step", type=int, default=None,
                      help="N_Step (100; a replayed table too small for it: 10%% of its rows)")
    loop.add_argument("--n-test", type=int, default=None,
                      help="held-out test set (200; a replayed table too small for it: 20%% "
                      "of its rows)")
    loop.add_argument("--n-bins", type=int, default=5)
    loop.add_argument("--weights", type=float, nargs=2, default=(2.0, 1.0), metavar=("W1", "W2"),
                      help="share of a bin below / at or above the threshold (2 1)")
    loop.add_argument("--max-iter", type=int, default=50)
    loop.add_argument("--max-samples", type=int, default=None)
    loop.add_argument("--encoding", default="fcc", help="see make_latency_pipeline (fcc)")
    loop.add_argument("--regressor", default="mlp", help="see make_latency_pipeline (mlp)")
    loop.add_argument("--seed", type=int, default=0,
                      help="seeds sampling, the test set and the model (0); rerun with the same "
                      "seed to resume a device fit")
    p.add_argument("--out", default="predictor.joblib", help="where to save the predictor")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("predict", help="predict latencies of architectures (JSON lines)")
    p.add_argument("--model", required=True, help="a predictor saved by esm-sklearn fit")
    p.add_argument("archs", help="file with one architecture (JSON object) per line; - for stdin")
    p.add_argument("--csv", action="store_true", help="write CSV with columns arch,latency_ms")
    p.add_argument("--out", default=None, help="file to write (default: standard output)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="score a predictor on a measured latency table")
    p.add_argument("--model", required=True, help="a predictor saved by esm-sklearn fit")
    p.add_argument("--table", default=None, help="bundled table name or CSV path")
    p.add_argument("--help-table", default=None, metavar="DIR")
    p.add_argument("--help-device", default=None, metavar="DEV")
    p.add_argument("--help-space", default=None, choices=["ofa_mobilenetv3", "fbnet"])
    p.add_argument("--n-bins", type=int, default=None, help="default: the model's, else 5")
    p.add_argument("--predictions", default=None, metavar="CSV",
                   help="also write arch, latency_ms, predicted_ms, in_training_set")
    p.set_defaults(func=_cmd_evaluate)

    # Further subcommands register here.
    return parser


def main(argv=None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"esm-sklearn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
