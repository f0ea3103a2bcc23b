"""Compare architecture encodings and regressors on measured latency tables.

The study behind the ESM paper's Figs. 3, 8, 9 and 10, done the way a
scikit-learn user does it: one latency Pipeline (steps ``encoder`` and
``regressor``, from :func:`esm_sklearn.predictors.make_latency_pipeline`)
whose two steps are swapped by ``GridSearchCV`` (``refit=False``), scored on
held-out rows with the package's scorers (1 - MAPE, share within +-10%,
Kendall's tau, worst depth bin).

Datasets: the bundled H200 tables, any bundled CPU table (picked up
automatically), and the HELP tables (OFA-MobileNetV3 and FBNet on GPUs at batch
1 and 64, a server CPU, phones and a Raspberry Pi 4) read from ``--help-dir``.

Protocol per dataset and training size N: ``--seeds`` random splits
(``ShuffleSplit``) of N training rows and a held-out test set of the remaining
rows (at most ``--test-cap``). N is each of ``--train-sizes`` that leaves at
least 20% of the rows for testing; a table too small for a requested size
gets, in its place, the 80/20 split (the size of 5-fold CV). The lookup-table
encoding runs only where a per-block lookup table exists. Models use
``random_state=0``; the seeds vary the splits.

Writes to ``--out`` (default ``docs/results``): ``comparison.csv`` (one row
per dataset, device, encoding, regressor and training size), ``comparison.md``
(the tables and figures), ``default_vs_baselines.csv`` (the default pipeline,
FCC + MLP, against the better of FCC + ridge and FCC + GBM), the figures
``fig3_binwise_sample_size.png``, ``fig8_predicted_vs_measured.png``,
``fig9_encoding_accuracy.png``, ``fig10_device_accuracy.png`` and the data of
Figs. 3 and 8 as CSV.

Run from the repository root::

    python studies/compare_encodings.py --quick          # smoke run, < 1 min
    python studies/compare_encodings.py                  # the full study
    python studies/compare_encodings.py --regressors ridge gbm --datasets h200_resnet_b1
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402
from report import log, machine, to_markdown  # noqa: E402
from sklearn.model_selection import GridSearchCV, ShuffleSplit  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import esm_sklearn  # noqa: E402
from esm_sklearn import plotting  # noqa: E402
from esm_sklearn.datasets import list_bundled, load_bundled, load_help  # noqa: E402
from esm_sklearn.metrics import (  # noqa: E402
    binwise_accuracy,
    get_scorer,
    latency_accuracy,
    worst_bin_accuracy,
)
from esm_sklearn.predictors import make_latency_pipeline  # noqa: E402
from esm_sklearn.spaces import get_space  # noqa: E402

H200_TABLES = ("h200_resnet_b1", "h200_mobilenetv3_b1", "h200_densenet_b1", "h200_resnet_b32")
HELP_DATASETS = {"help_ofa": "ofa_mobilenetv3", "help_fbnet": "fbnet"}
HELP_DEVICES = {
    "help_ofa": ("2080ti_1", "2080ti_64", "titan_rtx_1", "v100_64"),
    "help_fbnet": ("2080ti_1", "titanxp_64", "gold_6240", "pixel3", "samsung_s7", "raspi4"),
}
ENCODINGS = ("fcc", "fc", "fe", "onehot", "stat", "lut")
REGRESSORS = ("mlp", "ridge", "gbm", "linear")
DEFAULT_ENCODING, DEFAULT_REGRESSOR = "fcc", "mlp"
BASELINES = ("ridge", "gbm")  # compared with the default regressor on FCC
SCORING = {
    "accuracy": get_scorer("latency_accuracy"),
    "within_10": get_scorer("within_10"),
    "kendall_tau": get_scorer("kendall_tau"),
    "worst_bin": get_scorer("worst_bin"),
}
TEST_FRACTION = 0.2  # the least share of a table kept for testing
MODEL_SEED = 0

QUICK = {
    "datasets": ["h200_resnet_b1", "h200_densenet_b1", "help_ofa:2080ti_1", "help_fbnet:raspi4"],
    "seeds": 1,
    "train_sizes": [300],
    "test_cap": 500,
    "fig3_n": 100,
}


@dataclasses.dataclass
class LatencyData:
    """One latency table: architectures, latencies (ms) and where they come from."""

    dataset: str
    device: str
    space: str
    data: list
    target: np.ndarray
    lut: str | None = None

    @property
    def key(self) -> str:
        return f"{self.dataset}:{self.device}"




# ----------------------------------------------------------------- datasets
def _bundled_device(name: str, space: str) -> str:
    """The device part of a bundled table name ``<device>_<space>_b<batch>``."""
    marker = f"_{space}_b"
    return name.split(marker)[0] if marker in name else name


def default_dataset_names(help_dir: Path | None) -> list[str]:
    """The H200 tables, any bundled CPU table, and the HELP devices (if ``help_dir`` exists)."""
    bundled = list_bundled()
    names = [n for n in H200_TABLES if n in bundled]
    names += [n for n in bundled if "cpu" in n and n not in names]
    if help_dir is not None and help_dir.is_dir():
        names += [f"{d}:{dev}" for d, devices in HELP_DEVICES.items() for dev in devices]
    return names


def load_datasets(names: list[str], help_dir: Path) -> list[LatencyData]:
    """Load bundled tables (``name``) and HELP devices (``help_ofa:<device>``, ``help_fbnet``)."""
    bundled = list_bundled()
    out, help_cache = [], {}
    for name in names:
        dataset, _, device = name.partition(":")
        if dataset in HELP_DATASETS:
            devices = [device] if device else list(HELP_DEVICES[dataset])
            for dev in devices:
                out.append(_load_help_device(dataset, dev, help_dir, help_cache))
        elif name in bundled:
            bunch = load_bundled(name)
            out.append(
                LatencyData(name, _bundled_device(name, bunch.space), bunch.space,
                            bunch.data, bunch.target, bunch.lut)
            )
        else:
            raise ValueError(
                f"unknown dataset {name!r}; use a bundled table {bundled} or "
                f"{sorted(HELP_DATASETS)}[:<device>]"
            )
    return out


def _load_help_device(dataset: str, device: str, help_dir: Path, cache: dict) -> LatencyData:
    """One HELP device; a space's table is parsed once and its other device columns reused."""
    space = HELP_DATASETS[dataset]
    if space not in cache:
        if not help_dir.is_dir():
            raise ValueError(f"HELP folder {help_dir} not found (set --help-dir)")
        cache[space] = load_help(help_dir, device, space=space)
    bunch = cache[space]
    if device not in bunch.frame.columns:
        raise ValueError(f"HELP {space}: no device column {device!r}")
    target = pd.to_numeric(bunch.frame[device], errors="coerce").to_numpy(dtype=float)
    if not (np.isfinite(target).all() and (target > 0).all()):
        raise ValueError(f"HELP {space}, device {device!r}: latencies must be finite and > 0")
    return LatencyData(dataset, device, space, bunch.data, target)


def plan_train_sizes(n_rows: int, requested: list[int]) -> list[int]:
    """Requested sizes that leave >= 20% of the rows to test; else the 80/20 split."""
    max_train = n_rows - math.ceil(TEST_FRACTION * n_rows)
    sizes = {n for n in requested if n <= max_train}
    if len(sizes) < len(requested) and (not sizes or max(sizes) < max_train):
        sizes.add(max_train)
    return sorted(sizes)


# ------------------------------------------------------------------- models
def _pipeline(ds: LatencyData, encoding: str, regressor: str):
    return make_latency_pipeline(
        encoding=encoding, regressor=regressor, space=ds.space,
        lut_table=ds.lut if encoding == "lut" else None, random_state=MODEL_SEED,
    )


def candidate_steps(ds: LatencyData, encodings, regressors) -> tuple[dict, dict]:
    """``{name: encoder}`` and ``{name: regressor}`` steps for this dataset's grid."""
    encoders = {
        e: _pipeline(ds, e, DEFAULT_REGRESSOR if DEFAULT_REGRESSOR in regressors else regressors[0])
        .named_steps["encoder"]
        for e in encodings
        if e != "lut" or ds.lut is not None
    }
    models = {r: _pipeline(ds, DEFAULT_ENCODING, r).named_steps["regressor"] for r in regressors}
    return encoders, models


def evaluate(ds: LatencyData, train_size: int, encodings, regressors, args) -> pd.DataFrame:
    """Grid search over encoder x regressor on ``args.seeds`` shuffled splits of ``train_size``."""
    encoders, models = candidate_steps(ds, encodings, regressors)
    names = {id(step): name for name, step in {**encoders, **models}.items()}
    test_size = min(len(ds.target) - train_size, args.test_cap)
    cv = ShuffleSplit(n_splits=args.seeds, train_size=train_size, test_size=test_size,
                      random_state=args.random_state)
    search = GridSearchCV(
        _pipeline(ds, DEFAULT_ENCODING, next(iter(models))),
        {"encoder": list(encoders.values()), "regressor": list(models.values())},
        scoring=SCORING, refit=False, cv=cv, n_jobs=args.n_jobs, error_score="raise",
    )
    search.fit(ds.data, ds.target)
    res = search.cv_results_
    rows = []
    for i, params in enumerate(res["params"]):
        rows.append({
            "dataset": ds.dataset, "device": ds.device, "space": ds.space,
            "encoding": names[id(params["encoder"])], "regressor": names[id(params["regressor"])],
            "train_size": train_size, "test_size": test_size, "n_splits": args.seeds,
            **{m: float(res[f"mean_test_{m}"][i]) for m in SCORING},
            "accuracy_std": float(res["std_test_accuracy"][i]),
            "fit_time_s": float(res["mean_fit_time"][i]),
        })
    return pd.DataFrame(rows)


def _split(ds: LatencyData, train_size: int, args, seed: int):
    test_size = min(len(ds.target) - train_size, args.test_cap)
    cv = ShuffleSplit(n_splits=1, train_size=train_size, test_size=test_size, random_state=seed)
    return next(cv.split(ds.data))


def _take(data: list, idx) -> list:
    return [data[i] for i in idx]


def scatter_predictions(ds: LatencyData, train_size: int, encodings, regressor: str, args):
    """Test-set predictions of every encoding (the LUT with ``linear``, the paper's baseline)."""
    train, test = _split(ds, train_size, args, args.random_state)
    frames = []
    for e in encodings:
        if e == "lut" and ds.lut is None:
            continue
        reg = "linear" if e == "lut" and "linear" in args.regressors else regressor
        model = _pipeline(ds, e, reg).fit(_take(ds.data, train), ds.target[train])
        frames.append(pd.DataFrame({
            "dataset": ds.dataset, "device": ds.device, "encoding": e, "regressor": reg,
            "train_size": train_size, "y_true": ds.target[test],
            "y_pred": np.asarray(model.predict(_take(ds.data, test)), dtype=float).ravel(),
        }))
    return pd.concat(frames, ignore_index=True)


def binwise_sample_size(ds: LatencyData, n: int, regressor: str, args) -> pd.DataFrame:
    """Per-bin accuracy of FCC + ``regressor`` trained on N and on 4N rows (nested), same test set."""
    if 5 * n > len(ds.target):
        raise ValueError(f"{ds.key}: {len(ds.target)} rows cannot hold 4N = {4 * n} training rows "
                         "and a test set; lower --fig3-n")
    space = get_space(ds.space)
    rows = []
    for seed in range(args.seeds):
        perm = np.random.RandomState(args.random_state + seed).permutation(len(ds.target))
        n_test = min(len(perm) - 4 * n, args.test_cap)
        test, pool = perm[:n_test], perm[n_test:]
        archs_test = _take(ds.data, test)
        for size in (n, 4 * n):
            train = pool[:size]
            archs_train = _take(ds.data, train)
            model = _pipeline(ds, DEFAULT_ENCODING, regressor).fit(archs_train, ds.target[train])
            pred = np.asarray(model.predict(archs_test), dtype=float).ravel()
            table = binwise_accuracy(ds.target[test], pred, archs_test, space=space)
            train_bins = space.bin_index(archs_train, len(table))
            table["train_count"] = np.bincount(train_bins, minlength=len(table))
            table["train_size"] = size
            table["seed"] = seed
            table["overall"] = latency_accuracy(ds.target[test], pred)
            table["worst_bin"] = worst_bin_accuracy(ds.target[test], pred, archs_test, space=space)
            rows.append(table)
    out = pd.concat(rows, ignore_index=True)
    out.insert(0, "device", ds.device)
    out.insert(0, "dataset", ds.dataset)
    return out


# ------------------------------------------------------------------ reports
def default_vs_baselines(results: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and train size: FCC + MLP against the better of FCC + ridge / FCC + GBM."""
    fcc = results[results["encoding"] == DEFAULT_ENCODING]
    table = fcc.pivot_table(index=["dataset", "device", "train_size"], columns="regressor",
                            values="accuracy", sort=False)
    needed = [DEFAULT_REGRESSOR, *BASELINES]
    if any(r not in table.columns for r in needed):
        return pd.DataFrame()
    out = table[needed].add_prefix("fcc_").reset_index()
    base = table[list(BASELINES)]
    out["best_baseline"] = ["fcc+" + r for r in base.idxmax(axis=1)]
    out["best_baseline_accuracy"] = base.max(axis=1).to_numpy()
    out["margin"] = out[f"fcc_{DEFAULT_REGRESSOR}"] - out["best_baseline_accuracy"]
    out["default_wins"] = out["margin"] > 0
    return out




def write_report(out: Path, results, comparison, figures: dict, args, argv, seconds: float) -> None:
    regressor = DEFAULT_REGRESSOR if DEFAULT_REGRESSOR in args.regressors else args.regressors[0]
    largest = results[results["train_size"] == results.groupby(["dataset", "device"])["train_size"]
                      .transform("max")]
    summary = largest[largest["regressor"] == regressor].pivot_table(
        index=["dataset", "device", "train_size"], columns="encoding", values="accuracy", sort=False)
    summary = summary[[e for e in ENCODINGS if e in summary.columns]].reset_index()
    wins = ""
    if len(comparison):
        wins = (f"The default pipeline wins in {int(comparison['default_wins'].sum())} of "
                f"{len(comparison)} dataset/train-size cases.\n\n")
    text = [
        "# Encodings and regressors compared on measured latency tables",
        "",
        f"Generated by `python studies/compare_encodings.py {' '.join(argv)}` "
        f"in {seconds / 60:.1f} min on {machine()} "
        f"(esm_sklearn {esm_sklearn.__version__}, scikit-learn {sklearn.__version__}).",
        "",
        "Protocol: per dataset and training size N, `GridSearchCV(refit=False)` over the "
        "`encoder` x `regressor` steps of `make_latency_pipeline()`, on "
        f"{args.seeds} `ShuffleSplit` split(s) of N training rows and a test set of the "
        f"remaining rows (at most {args.test_cap}). N is each of {args.train_sizes} that leaves "
        "at least 20% of the rows to test; smaller tables use the 80/20 split instead. "
        "Scores are means over the splits: accuracy = 1 - MAPE, `within_10` = share of "
        "predictions within ±10%, Kendall's tau, `worst_bin` = accuracy of the weakest of 5 "
        "total-depth bins. Models use `random_state=0`. The lookup-table encoding (`lut`) "
        "runs only where a per-block lookup table was profiled.",
        "",
        f"## Default pipeline (FCC + {DEFAULT_REGRESSOR}) vs FCC + ridge / FCC + GBM",
        "",
        wins + (to_markdown(comparison) if len(comparison) else
                f"(not computed: needs regressors {DEFAULT_REGRESSOR}, {', '.join(BASELINES)})"),
        "",
        f"## Accuracy (1 - MAPE) per dataset and encoding, {regressor}, largest train size",
        "",
        to_markdown(summary),
        "",
        "## Figures",
        "",
    ]
    text += [f"![{caption}]({file})\n" for file, caption in figures.items()]
    text += ["## All results", "", "`accuracy_std`: standard deviation over the splits; "
             "`fit_time_s`: mean fit time of one model.", "", to_markdown(results), ""]
    (out / "comparison.md").write_text("\n".join(text))




# --------------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("docs/results"), help="output folder")
    p.add_argument("--help-dir", type=Path, default=Path("../shared/external/help"),
                   help="folder of the HELP tables (skipped when absent)")
    p.add_argument("--datasets", nargs="+", default=None,
                   help="bundled table names and help_ofa[:device] / help_fbnet[:device] "
                        "(default: H200 tables, bundled CPU tables, HELP devices)")
    p.add_argument("--encodings", nargs="+", choices=ENCODINGS, default=list(ENCODINGS))
    p.add_argument("--regressors", nargs="+", choices=REGRESSORS, default=list(REGRESSORS))
    p.add_argument("--seeds", type=int, default=3, help="random splits per train size")
    p.add_argument("--train-sizes", type=int, nargs="+", default=[300, 1000])
    p.add_argument("--test-cap", type=int, default=2000, help="most test rows per split")
    p.add_argument("--scatter-dataset", default="h200_resnet_b1",
                   help="dataset key of Fig. 8 (dataset or dataset:device; default h200_resnet_b1, "
                        "else the first)")
    p.add_argument("--fig3-dataset", default="help_ofa:2080ti_1",
                   help="dataset key of Fig. 3 (default help_ofa:2080ti_1, else the largest)")
    p.add_argument("--fig3-n", type=int, default=250, help="Fig. 3 compares N with 4N rows")
    p.add_argument("--n-jobs", type=int, default=1, help="GridSearchCV jobs")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS/OpenMP/torch threads per model (1 is fastest for these small "
                        "models, especially on a shared machine)")
    p.add_argument("--random-state", type=int, default=0, help="seed of the splits")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 4 datasets, 1 split, N=300, test cap 500 (< 1 min)")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if key != "datasets" or args.datasets is None:
                setattr(args, key, value)
    for name in ("seeds", "test_cap", "fig3_n", "threads", "n_jobs"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.train_sizes) < 2:
        raise SystemExit("--train-sizes must be >= 2")
    return args


def _find(datasets: list[LatencyData], wanted: str) -> LatencyData | None:
    for ds in datasets:
        if wanted in (ds.key, ds.dataset):
            return ds
    return None


def main(argv=None) -> pd.DataFrame:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with threadpool_limits(args.threads):
            return run(args, argv)
    finally:
        torch.set_num_threads(torch_threads)


def run(args, argv) -> pd.DataFrame:
    """The study; see the module docstring."""
    start = time.perf_counter()
    names = args.datasets or default_dataset_names(args.help_dir)
    if not args.datasets and not args.help_dir.is_dir():
        log(f"HELP folder {args.help_dir} not found: HELP datasets skipped")
    datasets = load_datasets(names, args.help_dir)
    log(f"{len(datasets)} dataset(s) loaded in {time.perf_counter() - start:.1f} s: "
        + ", ".join(f"{d.key} ({len(d.target)})" for d in datasets))
    args.out.mkdir(parents=True, exist_ok=True)
    regressor = DEFAULT_REGRESSOR if DEFAULT_REGRESSOR in args.regressors else args.regressors[0]

    frames = []
    jobs = [(ds, n) for ds in datasets for n in plan_train_sizes(len(ds.target), args.train_sizes)]
    for k, (ds, n) in enumerate(jobs, 1):
        if args.encodings == ["lut"] and ds.lut is None:
            log(f"[{k}/{len(jobs)}] {ds.key}: skipped (no lookup table)")
            continue
        t0 = time.perf_counter()
        frame = evaluate(ds, n, args.encodings, args.regressors, args)
        frames.append(frame)
        best = frame.loc[frame["accuracy"].idxmax()]
        log(f"[{k}/{len(jobs)}] {ds.key} N={n} test={frame['test_size'].iloc[0]}: "
            f"{len(frame)} candidates x {args.seeds} split(s) in {time.perf_counter() - t0:.1f} s; "
            f"best {best['encoding']}+{best['regressor']} {best['accuracy']:.3f} "
            f"(elapsed {time.perf_counter() - start:.0f} s)")
    if not frames:
        raise SystemExit("no dataset could be evaluated with the chosen encodings")
    results = pd.concat(frames, ignore_index=True)
    results.to_csv(args.out / "comparison.csv", index=False)
    comparison = default_vs_baselines(results)
    if len(comparison):
        comparison.to_csv(args.out / "default_vs_baselines.csv", index=False)

    figures = make_figures(datasets, results, regressor, args)
    seconds = time.perf_counter() - start
    write_report(args.out, results, comparison, figures, args, argv, seconds)
    if len(comparison):
        log("\n" + to_markdown(comparison))
    log(f"\nwrote {args.out}/comparison.md, comparison.csv and {len(figures)} figures "
        f"in {seconds:.0f} s")
    return results


def make_figures(datasets, results, regressor: str, args) -> dict[str, str]:
    """Draw Figs. 3, 8, 9 and 10 into ``args.out``; returns ``{file: caption}``."""
    figures = {}

    def save(fig, name: str, caption: str) -> None:
        fig.savefig(args.out / name, dpi=120)
        figures[name] = caption

    t0 = time.perf_counter()
    fig3_ds = _find(datasets, args.fig3_dataset) or max(datasets, key=lambda d: len(d.target))
    n_rows = len(fig3_ds.target)
    n3 = min(args.fig3_n, (n_rows - math.ceil(TEST_FRACTION * n_rows)) // 4)
    if n3 >= 2:
        bins = binwise_sample_size(fig3_ds, n3, regressor, args)
        bins.to_csv(args.out / "fig3_binwise.csv", index=False)
        save(plotting.plot_binwise_sample_size(
            bins, title=f"{DEFAULT_ENCODING.upper()} + {regressor} on {fig3_ds.key}: accuracy per "
                        f"depth bin, N={n3} vs 4N={4 * n3} (cf. ESM Fig. 3)"),
             "fig3_binwise_sample_size.png", "Fig. 3: accuracy per depth bin, N vs 4N samples")
        log(f"Fig. 3 ({fig3_ds.key}, N={n3}) in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    scatter = _find(datasets, args.scatter_dataset) or datasets[0]
    n_scatter = plan_train_sizes(len(scatter.target), args.train_sizes)[0]
    predictions = scatter_predictions(scatter, n_scatter, args.encodings, regressor, args)
    predictions.to_csv(args.out / "fig8_predictions.csv", index=False)
    save(plotting.plot_predicted_vs_measured(
        predictions, title=f"Predicted vs measured latency, {scatter.key}, N={n_scatter} "
                           "(cf. ESM Fig. 8)"),
         "fig8_predicted_vs_measured.png", "Fig. 8: predicted vs measured latency")
    log(f"Fig. 8 ({scatter.key}, {predictions['encoding'].nunique()} encodings) in "
        f"{time.perf_counter() - t0:.1f} s")

    save(plotting.plot_encoding_accuracy(results), "fig9_encoding_accuracy.png",
         "Fig. 9: average accuracy per encoding")
    save(plotting.plot_device_accuracy(results, regressor=regressor), "fig10_device_accuracy.png",
         "Fig. 10: accuracy per device and encoding")
    return figures


if __name__ == "__main__":
    main()
