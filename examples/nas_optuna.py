"""Multi-objective NAS with Optuna's NSGA-II: most parameters for the least predicted latency.

A latency predictor for the H200 at batch size 32 is fitted on the bundled
``h200_resnet_b32`` table; NSGA-II then searches the ResNet space for the
Pareto front of (parameters, predicted latency). ``space.suggest(trial)``
suggests every position of the fixed-length layout (``space.vector_columns``)
in every trial, so NSGA-II evolves one genome of fixed length. Trials are asked
a generation at a time (``study.ask``/``study.tell``) so the predictor scores a
whole batch in one call. The front is printed with each architecture's
out-of-distribution score (distance to the predictor's training data; above 2
the prediction is an extrapolation).

    python examples/nas_optuna.py                 # 2,000 trials, about a minute
    python examples/nas_optuna.py --n-trials 40   # smoke run

Needs ``pip install esm-sklearn[optuna]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import optuna

from esm_sklearn import get_space, make_latency_pipeline
from esm_sklearn.datasets import load_bundled
from esm_sklearn.setting import check_setting, record_setting, setting_from_table


def fit_predictor(max_epochs: int):
    table = load_bundled("h200_resnet_b32")
    predictor = make_latency_pipeline(space="resnet", random_state=0, max_epochs=max_epochs)
    predictor.fit(table.data, table.target)
    # setting_ (device, batch size, resolution, source) and ood_ travel with the predictor.
    return record_setting(predictor, setting_from_table(table), table.data)


def search(space, predictor, n_trials: int, population: int, seed: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.NSGAIISampler(population_size=population, seed=seed),
    )
    while len(study.trials) < n_trials:
        trials = [study.ask() for _ in range(min(population, n_trials - len(study.trials)))]
        archs = [space.suggest(t) for t in trials]
        params = space.count_params(archs) / 1e6
        latency = predictor.predict(archs)
        for trial, arch, p, ms in zip(trials, archs, params, latency):
            trial.set_user_attr("arch", arch)
            study.tell(trial, [float(p), float(ms)])
    return study


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-trials", type=int, default=2000)
    p.add_argument("--population", type=int, default=50)
    p.add_argument("--max-epochs", type=int, default=100, help="predictor training epochs")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    space = get_space("resnet")
    predictor = fit_predictor(args.max_epochs)
    setting, ood = predictor.setting_, predictor.ood_
    # The predictor is valid for the setting it was measured in: say which one we search for.
    check_setting(predictor, space=space, device="h200", batch_size=32, resolution=224)
    print(f"predictor: {setting['device']}, batch {setting['batch_size']}, resolution "
          f"{setting['resolution']}, {setting['n_rows']} training archs ({setting['source']})")
    print(f"search: NSGA-II over {len(space.vector_columns)} integer genes, {args.n_trials} "
          f"trials, population {args.population}")

    study = search(space, predictor, args.n_trials, args.population, args.seed)
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    archs = [t.user_attrs["arch"] for t in front]
    scores = ood.ood_score(archs)
    print(f"\nPareto front: {len(front)} architectures")
    print(f"{'params_M':>9} {'pred_ms':>8} {'ood':>5}  depth")
    for t, arch, score in zip(front, archs, scores):
        flag = " (extrapolated)" if score > ood.threshold else ""
        print(f"{t.values[0]:9.1f} {t.values[1]:8.2f} {score:5.2f}  {arch['depth']}{flag}")
    # Any trial's architecture can also be rebuilt from its params (the fixed-length vector).
    assert space.from_vector([[front[0].params[c] for c in space.vector_columns]]) == archs[:1]
    best = max(front, key=lambda t: t.values[0] / t.values[1])
    print(f"\nmost parameters per predicted ms: {best.values[0]:.1f} M at {best.values[1]:.2f} ms; "
          f"{np.mean(scores > ood.threshold):.0%} of the front is extrapolated")


if __name__ == "__main__":
    main()
