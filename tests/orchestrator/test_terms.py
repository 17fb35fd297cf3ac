"""The optimise stage's term bookkeeping: which terms apply at a step (period, phase, weight schedule) and
the timestep range an sds term sends at a step (linear anneal, or piecewise t_anneal points)."""

from __future__ import annotations

import pytest

from orchestrator.stages.params import Term
from orchestrator.stages.terms import _timesteps, due_terms


def test_terms_alternate_with_period_and_phase_and_follow_their_weight_schedule():
    terms = [Term(kind="sds", every=2, phase=0), Term(kind="identity", every=2, phase=1),
             Term(kind="sds", weight=(10, 0.0, 1.0, 20))]
    seen = {step: [i for i, _, _ in due_terms(terms, step)] for step in range(0, 24)}
    assert seen[0] == [0] and seen[1] == [1] and seen[2] == [0]           # weight 0 until step 10
    assert seen[11] == [1, 2] and seen[12] == [0, 2]
    weights = {step: w for step in (10, 15, 20, 30) for i, _, w in due_terms(terms, step) if i == 2}
    assert 10 not in weights and weights[15] == pytest.approx(0.5) and weights[20] == weights[30] == 1.0


def test_timestep_ranges_anneal_linearly_or_piecewise():
    linear = Term(kind="sds", t_range=(0.5, 0.98), t_range_end=(0.02, 0.5))
    ts = _timesteps(linear, 50, 101)
    assert (ts.t_min, ts.t_max, ts.t_min_end, ts.t_max_end) == (0.5, 0.98, 0.02, 0.5)
    assert ts.training_fraction == pytest.approx(0.5)
    piecewise = Term(kind="sds", t_anneal=[(0, 0.5, 0.98), (100, 0.02, 0.5), (200, 0.02, 0.2)])
    assert (_timesteps(piecewise, 0, 300).t_min, _timesteps(piecewise, 0, 300).t_max) == (0.5, 0.98)
    mid = _timesteps(piecewise, 50, 300)
    assert mid.t_min == pytest.approx(0.26) and mid.t_max == pytest.approx(0.74) and mid.training_fraction == 0
    late = _timesteps(piecewise, 250, 300)
    assert (late.t_min, late.t_max) == (0.02, 0.2)


@pytest.mark.parametrize("kw", [dict(t_anneal=[(10, 0.2, 0.5), (5, 0.1, 0.3)]), dict(variant="isd"),
                                dict(variant="image_conditioned"), dict(kind="regress")])
def test_inconsistent_terms_are_refused(kw):
    with pytest.raises(ValueError):
        Term(**{"kind": "sds", **kw})
