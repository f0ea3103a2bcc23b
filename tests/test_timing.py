"""Timing primitives and the oracle's timing modes (clocks, pairing, adaptive
repeats, burn-in), checked with fake models on a fake clock: no real timing."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from esm_sklearn import TorchLatencyOracle, get_space, timing
from esm_sklearn.oracle import anchor_architecture
from esm_sklearn.quality import ReferenceMonitor
from esm_sklearn.store import MeasurementStore
from esm_sklearn.timing import (
    relative_ci,
    resolve_clock,
    summarize_paired,
    summarize_timings,
    time_runs,
)


class FakeClock:
    """Seconds that advance only when a fake model runs; ``load`` scales every run."""

    def __init__(self, load=lambda clock: 1.0):
        self.t = 0.0
        self.calls = 0
        self.load = load

    def __call__(self) -> float:
        return self.t

    def spend(self, ms: float) -> None:
        self.t += ms * self.load(self) / 1e3
        self.calls += 1


class FakeNet:
    """Stands in for a torch module: a call costs ``ms`` (times the load) on the clock."""

    def __init__(self, ms, clock, log, name):
        self.ms, self.clock, self.log, self.name = ms, clock, log, name

    def to(self, dev):
        return self

    def eval(self):
        return self

    def __call__(self, x):
        self.log.append(self.name)
        self.clock.spend(self.ms)


@pytest.fixture
def fake(monkeypatch):
    """Fake clock for both clock names and fake models of ``1 + total depth`` ms."""
    clock = FakeClock()
    log: list = []
    monkeypatch.setitem(timing._CLOCK_FUNCTIONS, "wall", clock)
    monkeypatch.setitem(timing._CLOCK_FUNCTIONS, "thread", clock)

    def build(self, space, arch):
        name = json.dumps(arch["depth"])
        return FakeNet(1.0 + sum(arch["depth"]), clock, log, name), (1, 3, 4, 4)

    monkeypatch.setattr(TorchLatencyOracle, "_build", build)
    return clock, log


ANCHOR = json.dumps(anchor_architecture("mobilenetv3")["depth"])  # [4, 4, 4, 4]: 17 ms
FAST = {"resolution": 32, "warmup": 1, "runs": 9, "threads": 1, "burn_in": 0.0}


# ------------------------------------------------------------------ statistics
def test_summarize_timings_trims_both_ends():
    stats = summarize_timings([5.0, 1.0, 2.0, 3.0, 4.0, 100.0, 0.1, 3.0, 2.0, 4.0], trim=0.2)
    # 10 runs: the 2 fastest and 2 slowest are dropped before averaging.
    assert stats["latency_ms"] == pytest.approx(np.mean([2.0, 2.0, 3.0, 3.0, 4.0, 4.0]))
    assert stats["min_ms"] == 0.1 and stats["runs"] == 10
    assert stats["median_ms"] == 3.0
    assert summarize_timings([7.0], trim=0.2)["latency_ms"] == 7.0  # one run is kept
    with pytest.raises(ValueError, match="trim"):
        summarize_timings([1.0, 2.0], trim=0.5)


def test_paired_latency_is_median_ratio_times_calibrated_anchor():
    cand = np.array([3.0, 6.0, 3.3, 30.0, 4.5])  # the host slows down 2x, then a 10x spike
    anchor = np.array([2.0, 4.0, 2.0, 2.0, 3.0])
    stats = summarize_paired(cand, anchor, anchor_ms=2.0)
    ratios = cand / anchor  # 1.5, 1.5, 1.65, 15, 1.5
    assert stats["ratio"] == pytest.approx(np.median(ratios)) == pytest.approx(1.5)
    assert stats["latency_ms"] == pytest.approx(3.0) and stats["min_ms"] == pytest.approx(3.0)
    assert stats["runs"] == 5 and stats["anchor_ms"] == 2.0
    # the raw statistics of both sides are kept
    assert stats["raw"]["latency_ms"] == pytest.approx(summarize_timings(cand)["latency_ms"])
    assert stats["anchor_raw"]["median_ms"] == 2.0
    with pytest.raises(ValueError, match="as many anchor times"):
        summarize_paired(cand, anchor[:3], anchor_ms=2.0)
    with pytest.raises(ValueError, match="anchor_ms"):
        summarize_paired(cand, anchor, anchor_ms=float("nan"))


def test_relative_ci_of_median_and_trimmed_mean():
    assert relative_ci([5.0] * 30, "median") == 0.0
    assert relative_ci([1.0, 2.0], "median") == np.inf  # too few values
    noisy = np.random.RandomState(0).normal(10.0, 1.0, 400)
    # about 1.96 * sd / sqrt(n) relative to the level (x1.25 for the median)
    assert 0.008 < relative_ci(noisy, "trimmed_mean") < 0.013
    assert 0.008 < relative_ci(noisy, "median") < 0.016
    with pytest.raises(ValueError, match="statistic"):
        relative_ci(noisy, "mean")


# --------------------------------------------------------------------- clocks
def test_clock_validation():
    assert resolve_clock("auto", "cpu", 1) == "thread"
    assert resolve_clock("auto", "cpu", 2) == "wall"
    assert resolve_clock("auto", "cuda", 1) == "wall"
    assert resolve_clock("wall", "cpu", 8) == "wall"
    with pytest.raises(ValueError, match=r"clock='thread'.*one torch thread.*got 4 threads"):
        resolve_clock("thread", "cpu", 4)
    with pytest.raises(ValueError, match=r"clock='thread'.*CPU device.*'cuda'"):
        resolve_clock("thread", "cuda", 1)
    with pytest.raises(ValueError, match=r"clock must be one of .*'cpu_time'"):
        resolve_clock("cpu_time", "cpu", 1)


@pytest.mark.parametrize("params, match", [
    ({"clock": "thread", "threads": 2}, "threads=1"),
    ({"clock": "process"}, "clock must be one of"),
    ({"paired": "yes"}, "paired must be True or False"),
    ({"rel_ci": 0.0}, "rel_ci"),
    ({"min_runs": 0}, "min_runs"),
    ({"burn_in": -1.0}, "burn_in"),
])
def test_bad_timing_parameters_fail_before_any_timing(fake, params, match):
    clock, log = fake
    store = MeasurementStore()
    oracle = TorchLatencyOracle(**{**FAST, **params, "store": store})
    with pytest.raises(ValueError, match=match):
        oracle.measure(get_space("mobilenetv3").sample(1, random_state=0))
    assert log == [] and len(store) == 0


def test_auto_clock_follows_the_thread_count(fake):
    arch = get_space("mobilenetv3").sample(1, random_state=0)
    one = TorchLatencyOracle(**{**FAST, "threads": 1, "n_references": 0})
    one.measure(arch)
    two = TorchLatencyOracle(**{**FAST, "threads": 2, "n_references": 0})
    two.measure(arch)
    assert one.clock_ == "thread" and two.clock_ == "wall"
    default = TorchLatencyOracle(**{**FAST, "threads": None, "n_references": 0})
    default.measure(arch)  # a CPU: one thread and the thread clock unless told otherwise
    assert default.clock_ == "thread" and default.device_info_["threads"] == 1
    assert json.loads(one.stats_["arch"].iloc[0]) == arch[0]
    assert one.setting_key_ != two.setting_key_  # the clock is part of the protocol


# -------------------------------------------------------------- run loops
def _alternating(clock, cand_ms, anchor_ms, log=None):
    def run():
        clock.spend(cand_ms)
        if log is not None:
            log.append("c")

    def anchor():
        clock.spend(anchor_ms)
        if log is not None:
            log.append("a")

    return run, anchor


def test_pairs_alternate_and_cancel_a_changing_load(monkeypatch):
    # The host is 3x slower for a while: both members of a pair see it.
    clock = FakeClock(load=lambda c: 3.0 if 6 <= c.calls < 14 else 1.0)
    monkeypatch.setitem(timing._CLOCK_FUNCTIONS, "wall", clock)
    log = []
    run, anchor = _alternating(clock, 3.0, 2.0, log)
    out = time_runs(run, runs=10, anchor=anchor)
    assert log[:4] == ["a", "c", "c", "a"]  # anchor first in even pairs, candidate first in odd
    assert out["runs"] == 10 and not out["stopped_early"]
    np.testing.assert_allclose(out["times_ms"] / out["anchor_times_ms"], 1.5)
    assert out["times_ms"].max() == pytest.approx(9.0)  # the raw times did see the load
    stats = summarize_paired(out["times_ms"], out["anchor_times_ms"], anchor_ms=2.0)
    assert stats["latency_ms"] == pytest.approx(3.0)


def test_adaptive_repeats_stop_once_the_interval_is_tight(monkeypatch):
    clock = FakeClock()
    monkeypatch.setitem(timing._CLOCK_FUNCTIONS, "wall", clock)
    noise = iter(np.random.RandomState(1).normal(1.0, 0.05, 10_000))

    def noisy():
        clock.spend(10.0 * next(noise))

    steady = time_runs(lambda: clock.spend(10.0), runs=150, min_runs=20, rel_ci=0.01)
    assert steady["runs"] == 20 and steady["stopped_early"] and steady["rel_ci"] < 1e-9
    loose = time_runs(noisy, runs=150, min_runs=20, rel_ci=0.05)
    tight = time_runs(noisy, runs=150, min_runs=20, rel_ci=0.01)
    assert loose["runs"] == 20 and loose["rel_ci"] <= 0.05
    assert 20 < tight["runs"] < 150 and tight["rel_ci"] <= 0.01
    # the stop is where the interval first got within the target
    assert relative_ci(tight["times_ms"][:-1], "trimmed_mean") > 0.01
    never = time_runs(noisy, runs=40, min_runs=20, rel_ci=1e-6)
    assert never["runs"] == 40 and not never["stopped_early"] and never["rel_ci"] > 1e-6
    fixed = time_runs(noisy, runs=40)
    assert fixed["runs"] == 40 and np.isnan(fixed["rel_ci"])


def test_adaptive_paired_runs_stop_on_the_ratio(monkeypatch):
    # A host whose speed changes every run: the raw times never settle, the ratios do.
    clock = FakeClock(load=lambda c: 1.0 + (c.calls // 2) % 5 * 0.3)
    monkeypatch.setitem(timing._CLOCK_FUNCTIONS, "wall", clock)
    run, anchor = _alternating(clock, 4.0, 2.0)
    out = time_runs(run, runs=150, anchor=anchor, min_runs=15, rel_ci=0.01)
    assert out["runs"] == 15 and relative_ci(out["times_ms"], "trimmed_mean") > 0.05


# --------------------------------------------------------- the oracle, paired
def test_oracle_paired_latency_and_store_keep_ratio_and_raw_statistics(fake):
    clock, log = fake
    space = get_space("mobilenetv3")
    arch = {"space": "mobilenetv3", "depth": [1, 2, 3, 4],
            "kernel_size": [[3] * d for d in (1, 2, 3, 4)],
            "expand_ratio": [[0.5] * d for d in (1, 2, 3, 4)]}
    store = MeasurementStore()
    oracle = TorchLatencyOracle(**{**FAST, "n_references": 0, "store": store, "rel_ci": None})
    lat = oracle.measure([arch], space=space)
    # The anchor (17 ms) was calibrated alone with max(3 * runs, 60) runs.
    assert oracle.anchor_ms_ == pytest.approx(17.0)
    assert log[: 1 + 60].count(ANCHOR) == 61  # warm-up + calibration
    assert lat[0] == pytest.approx(11.0)  # ratio 11/17 x 17 ms
    row = store.frame("arch").iloc[0]
    extra = json.loads(row["extra"])
    assert extra["ratio"] == pytest.approx(11 / 17) and extra["anchor_ms"] == pytest.approx(17.0)
    assert extra["raw"]["latency_ms"] == pytest.approx(11.0)
    assert extra["anchor_raw"]["latency_ms"] == pytest.approx(17.0)
    assert extra["clock"] == "thread" and row["runs"] == 9
    assert extra["seconds"] > 0 and oracle.stats_["seconds"].iloc[0] == extra["seconds"]
    protocol = json.loads(row["protocol"])
    assert protocol["paired"] is True and protocol["clock"] == "thread"
    assert json.loads(protocol["anchor"])["depth"] == [4, 4, 4, 4]


def test_qc_judges_paired_latencies_and_resume_reuses_the_calibration(fake):
    clock, log = fake
    archs = get_space("mobilenetv3").sample(4, random_state=3)
    store = MeasurementStore()
    params = {**FAST, "n_references": 2, "check_every": 2, "store": store, "max_retries": 0}
    # The host gets 1.6x slower after the first reference round: wall-clock QC would fail.
    clock.load = lambda c: 1.6 if c.calls > 150 else 1.0
    paired = TorchLatencyOracle(**params)
    paired.measure(archs[:2])
    assert paired.qc_check_.passed and paired.qc_check_.worst < 1e-9
    first_anchor = paired.anchor_ms_
    assert first_anchor == pytest.approx(17.0)
    # A later session on the same store keeps the scale of the first one, though the
    # host is now 2x slower and a new calibration would say 34 ms.
    clock.load = lambda c: 2.0
    again = TorchLatencyOracle(**params)
    again.measure(archs)
    assert again.anchor_ms_ == first_anchor and again.summary_["n_skipped"] == 2
    assert again.qc_check_.passed
    np.testing.assert_allclose(again.stats_["latency_ms"],
                               [1.0 + sum(a["depth"]) for a in archs])
    unpaired = TorchLatencyOracle(**{**params, "paired": False, "store": None})
    clock.calls, clock.load = 0, (lambda c: 1.6 if c.calls > 30 else 1.0)
    unpaired.measure(archs)
    assert not unpaired.qc_check_.passed  # the same slow-down, judged on raw latencies


def test_burn_in_runs_anchor_and_references_before_the_first_reference_round(fake, monkeypatch):
    clock, log = fake
    events = []
    real_burn_in, real_check = timing.burn_in, ReferenceMonitor.check

    def burn_in(calls, seconds, clock):
        start = len(log)
        done = real_burn_in(calls, seconds, clock)
        events.append(("burn-in", seconds, start, len(log)))
        return done

    def check(self, *args, **kwargs):
        outcome = real_check(self, *args, **kwargs)
        events.append(("round", len(log)))
        return outcome

    monkeypatch.setattr(timing, "burn_in", burn_in)
    monkeypatch.setattr(ReferenceMonitor, "check", check)
    archs = get_space("mobilenetv3").sample(2, random_state=0)
    oracle = TorchLatencyOracle(**{**FAST, "burn_in": 0.5, "n_references": 2})
    oracle.measure(archs)
    assert [e[0] for e in events] == ["burn-in", "round", "round"]
    _, seconds, start, end = events[0]
    assert seconds == 0.5 and start == 0  # nothing ran before the burn-in
    refs = [json.dumps(r["depth"]) for r in oracle.reference_archs("mobilenetv3")]
    assert log[:3] == [ANCHOR, *refs]  # it cycles through anchor and references
    assert end % 3 == 0 and end >= 6 and clock.t >= 0.5  # whole cycles for its (fake) seconds
    # then the calibration, then the first round's reference timings
    assert log[end : end + 61] == [ANCHOR] * 61 and set(log[end + 61 : events[1][1]]) == {
        ANCHOR, *refs}
    # Without a burn-in the anchor's calibration comes first.
    log.clear()
    TorchLatencyOracle(**{**FAST, "n_references": 2}).measure(archs)
    assert log[:61] == [ANCHOR] * 61 and log[61:63] == [refs[0], ANCHOR]


def test_time_architecture_is_the_per_arch_entry_point_of_a_fleet(fake):
    clock, log = fake
    space = get_space("mobilenetv3")
    a, b = space.sample(2, random_state=4)
    oracle = TorchLatencyOracle(**{**FAST, "burn_in": 0.1})
    first = oracle.time_architecture(a)
    n_after_first = len(log)
    second = oracle.time_architecture(json.dumps(b), space="mobilenetv3")
    # burn-in and calibration happen once per oracle, not per architecture
    assert len(log) - n_after_first == 2 * (1 + 9)  # warm-up pair + 9 pairs
    assert first["latency_ms"] == pytest.approx(1.0 + sum(a["depth"]))
    assert second["latency_ms"] == pytest.approx(1.0 + sum(b["depth"]))
    assert first["status"] == "ok" and first["anchor_ms"] == second["anchor_ms"]
    assert first["setting_key"] == second["setting_key"] and first["device"]["type"] == "cpu"
    assert json.loads(second["arch_key"]) == b
    # the setting, known before anything is timed (a fleet checks its units with it)
    setting = TorchLatencyOracle(**FAST).setting("mobilenetv3")
    assert setting["setting_key"] == first["setting_key"] and setting["device"] == first["device"]
    assert setting["protocol"]["clock"] == "thread" and setting["protocol"]["paired"] is True
    # what a dask worker receives: parameters only, no built models
    copy = pickle.loads(pickle.dumps(oracle))
    assert "_session" not in copy.__dict__ and copy.get_params() == oracle.get_params()


def test_oracle_records_the_runs_adaptive_repeats_used(fake):
    clock, log = fake
    archs = get_space("mobilenetv3").sample(2, random_state=5)
    store = MeasurementStore()
    # Fake models take exactly their time: the interval is 0 after min_runs pairs.
    oracle = TorchLatencyOracle(**{**FAST, "runs": 50, "min_runs": 6, "rel_ci": 0.01,
                                   "n_references": 0, "store": store})
    oracle.measure(archs)
    assert list(oracle.stats_["runs"]) == [6, 6]
    assert list(store.frame("arch")["runs"]) == [6, 6]
    assert json.loads(store.frame("arch")["protocol"].iloc[0])["rel_ci"] == 0.01
    fixed = TorchLatencyOracle(**{**FAST, "runs": 12, "rel_ci": None, "n_references": 0})
    fixed.measure(archs)
    assert list(fixed.stats_["runs"]) == [12, 12]
