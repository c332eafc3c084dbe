"""A small benchmarks/self_healing.py: the platform's own policy, selection and gate, in-process,
against never-retrain and retrain-every-batch peers. A covariate-only shift (the concept never
changes) must not retrain; the demo's sudden concept drift must be healed after one drifted batch,
with far fewer retrains than the every-batch peer and a served metric well above never-retraining."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "self_healing.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("self_healing_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(mod)
    return mod


def _scenario(bench, name, n, rows, warmup):
    s = next(s for s in bench.scenarios() if s.name == name)
    s.n_batches, s.rows, s.warmup = n, rows, warmup
    return s


def test_covariate_shift_alone_never_retrains(bench):
    lines = []
    r = bench.run_scenario(_scenario(bench, "covariate", 7, 1000, 3), log=lines.append)
    print("\n".join(lines), r.row(), sep="\n")
    p = r.runs["platform"]
    assert p.retrains == 0, (p.triggers, lines)
    assert not r.champion_dropped and r.met, r.row()
    assert any("drifted" in line for line in lines), "the scenario must really drift"
    # CBPE tracked the realised AUC on every batch
    assert p.estimates and max(abs(e - m) for e, m in p.estimates) < 0.05, p.estimates


def test_sudden_concept_drift_heals_after_one_batch(bench):
    lines = []
    r = bench.run_scenario(_scenario(bench, "demo", 8, 1500, 3), log=lines.append)
    print("\n".join(lines), r.row(), sep="\n")
    p, never, every = r.runs["platform"], r.runs["never"], r.runs["every"]
    first_drifted = 10 // 2 - 3 + 1  # demo drifts from raw batch n//2 on; batch 0 holds the warm-up
    assert p.triggers and p.triggers[0] == f"b{first_drifted:03d}:performance", (p.triggers, lines)
    assert p.promoted == 2 and not p.blocked, p.blocked  # the first model and the healed one
    assert p.retrains <= every.retrains / 2, (p.retrains, every.retrains)
    assert p.prequential > never.prequential + 0.03, r.row()
    assert r.champion_dropped and r.met, r.row()  # within 0.005 of the every-batch peer


def test_the_schedule_retrains_on_new_labelled_batches_only_at_its_ticks(bench):
    """--schedule-every K: the weekly schedule (core.policy.scheduled) after every K-th batch,
    judged by the same gate, where the policy alone keeps the champion."""
    lines = []
    r = bench.run_scenario(_scenario(bench, "covariate", 7, 1000, 3), log=lines.append, schedule_every=3)
    p = r.runs["platform"]
    assert p.triggers == ["b003:schedule", "b006:schedule"], (p.triggers, lines)
    assert p.promoted == 3 and not p.blocked, p.blocked  # the first model + two candidates the gate passed
    alone = bench.run_scenario(_scenario(bench, "covariate", 7, 1000, 3), log=None).runs["platform"]
    assert alone.retrains == 0, alone.triggers  # the policy alone keeps the champion
