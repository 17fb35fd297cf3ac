"""The GPU kit's Portrait3D-Text part (tests/gpu/run.sh PART=portrait3d_text -> tests/bench/portrait3d_text.py) at
tiny size on CPU: the same code path the lent device runs at full size, so a broken kit shows up here first."""

from __future__ import annotations

import math

import pytest


@pytest.mark.slow
def test_portrait3d_text_bench_runs_tiny_on_cpu_and_reports_every_stage():
    from tests.bench.portrait3d_text import bench_portrait3d_text

    r = bench_portrait3d_text(device="cpu", size="tiny", k_subjects=(1, 2))
    assert "RANDOM WEIGHTS" in r["note"] and "not a result" in r["note"]
    assert "random weights" in r["models"]["generator"] and "random weights" in r["models"]["guidance"]
    assert r["size"] == "tiny" and r["device"] == "cpu"
    stages = r["stages"]
    assert stages["inversion"]["s_per_step"] > 0 and stages["inversion"]["steps_timed"] >= 1
    assert stages["sds"]["s_per_iteration"] > 0
    assert all(v > 0 for v in stages["sds"]["breakdown_s"].values())
    ref = stages["refine"]
    assert ref["s_per_target_render"] > 0 and ref["s_per_view_denoise"] > 0 and ref["s_per_regress_step"] > 0
    # the extrapolation: the recipe's own counts, a formula per stage, minutes that follow from them
    counts = r["extrapolation"]["counts"]
    assert counts == {"invert_steps": 500, "sds_iterations": 2000, "refine_views": 21,
                      "refine_denoise_steps_per_view": 10, "refine_iterations": 399, "refine_rounds": 1}
    assert set(r["extrapolation"]["formula"]) == {"inversion", "sds", "refinement", "total"}
    est = r["estimated_minutes_this_device"]
    assert set(est) == {"inversion", "sds", "refinement", "total"}
    assert all(v > 0 and math.isfinite(v) for v in est.values())
    assert est["sds"] == pytest.approx(2000 * stages["sds"]["s_per_iteration"] / 60, abs=0.01)
    assert est["total"] == pytest.approx(est["inversion"] + est["sds"] + est["refinement"], abs=0.02)
    assert r["paper_rtx4090_minutes"] == {"inversion": 4, "sds": 22, "refinement": 5, "total": 30}
    # K subjects sharing one guidance service: throughput for each K, relative to K = 1
    assert set(r["k_subjects"]) == {"1", "2"}
    assert all(row["iterations_per_s"] > 0 for row in r["k_subjects"].values())
    assert r["k_subjects"]["1"]["speedup_vs_1"] == 1.0 and r["k_subjects"]["2"]["speedup_vs_1"] > 0
