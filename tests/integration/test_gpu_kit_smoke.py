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


@pytest.mark.slow
def test_portrait3d_id_bench_runs_tiny_on_cpu_and_extrapolates_with_the_recipes_counts():
    from orchestrator.recipes import load_recipe
    from tests.bench.portrait3d_id import PHASES, bench_portrait3d_id

    r = bench_portrait3d_id(device="cpu", size="tiny")
    assert "RANDOM WEIGHTS" in r["note"] and "not a result" in r["note"]
    assert "random weights" in r["models"]["generator"] and "random weights" in r["models"]["guidance"]
    assert r["size"] == "tiny" and r["device"] == "cpu" and r["recipe"] == "portrait3d_id"
    stages = r["stages"]
    assert set(stages) == set(PHASES) == {"geometry", "invert", "fit", "sculpt", "texture", "refine"}
    assert stages["geometry"]["generate_calls_timed"] == 2 and stages["geometry"]["s_per_step"] > 0
    assert stages["invert"]["s_per_step"] > 0 and stages["invert"]["s_per_pti_step"] > 0
    assert stages["invert"]["steps_timed"] >= 1 and stages["invert"]["pti_steps_timed"] >= 1
    for phase in ("fit", "sculpt"):
        assert stages[phase]["s_per_iteration"] > 0 and stages[phase]["iterations_timed"] >= 1
        assert all(v > 0 for v in stages[phase]["breakdown_s"].values())
    assert "distill" in stages["sculpt"]["breakdown_s"] and "distill" not in stages["fit"]["breakdown_s"]
    tex = stages["texture"]
    assert tex["inpaint_calls"] == tex["views_timed"] == 2 and tex["s_per_inpaint_step"] > 0
    assert stages["refine"]["s_per_round"] > 0 and stages["refine"]["denoise_calls"] >= 1
    # the extrapolation: the recipe's own counts (read from the YAML here too), a formula per phase
    p = load_recipe("portrait3d_id").params
    counts = r["extrapolation"]["counts"]
    assert counts["sculpt_iterations"] == p["sculpt"].iterations == 4000
    assert counts["fit_iterations"] == p["fit_gan_normals"].iterations == 1000
    assert counts["invert_steps"] == p["invert"].steps and counts["pti_steps"] == p["invert"].pti_steps
    assert counts["geometry_num_steps"] == p["geometry"].num_steps and counts["texture_views"] == 15
    assert counts["texture_num_steps"] == p["texture"].num_steps and counts["refine_rounds"] == p["refine"].rounds
    assert counts["dmtet_grid_resolution"] == 512 and counts["refine_denoise_steps"] == 6
    assert set(r["extrapolation"]["formula"]) == set(PHASES) | {"total"}
    est = r["estimated_minutes_this_device"]
    assert set(est) == set(PHASES) | {"total"}
    assert all(v > 0 and math.isfinite(v) for v in est.values())
    assert est["sculpt"] == pytest.approx(4000 * stages["sculpt"]["s_per_iteration"] / 60, abs=0.001)
    assert est["fit"] == pytest.approx(1000 * stages["fit"]["s_per_iteration"] / 60, abs=0.001)
    assert est["refine"] == pytest.approx(400 * stages["refine"]["s_per_round"] / 60, abs=0.001)
    assert est["geometry"] == pytest.approx(2 * 30 * stages["geometry"]["s_per_step"] / 60, abs=0.001)
    assert est["total"] == pytest.approx(sum(est[k] for k in PHASES), abs=0.01)
    assert r["paper_v100_minutes"]["total"] == 60
    assert set(r["not_timed"]) >= {"preprocess", "caption", "conversions"}
