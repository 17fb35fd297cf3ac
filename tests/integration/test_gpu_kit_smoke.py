"""The GPU kit's parts (tests/gpu/run.sh PART=portrait3d_text / portrait3d_id / id_to_3d -> tests/bench/<part>.py) at
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


@pytest.mark.slow
def test_id_to_3d_bench_runs_tiny_on_cpu_and_extrapolates_with_the_recipes_counts():
    from orchestrator.recipes import load_recipe
    from tests.bench.id_to_3d import PHASES, bench_id_to_3d

    r = bench_id_to_3d(device="cpu", size="tiny")
    assert "RANDOM WEIGHTS" in r["note"] and "not a result" in r["note"]
    assert "random weights" in r["models"]["guidance"] and "random_weights" in r["models"]["scene"]
    assert r["size"] == "tiny" and r["device"] == "cpu" and r["recipe"] == "id_to_3d"
    scene = r["models"]["scene"]
    assert scene["kind"] == "dmtet_expression" and scene["source"] == "head_template"
    assert scene["grid_resolution"] == 32 and scene["expressions"] == ["neutral", "smile", "mouth open"]
    assert scene["extent"] == 1.6 and scene["max_offset"] == 0.3
    assert 0 < scene["network_vertices"] <= scene["grid_vertices"]
    stages = r["stages"]
    assert set(stages) == set(PHASES) == {"geometry", "texture_diffuse", "texture_full", "texture_photoreal"}
    for phase, row in stages.items():
        assert "error" not in row, (phase, row)
        assert row["s_per_iteration"] > 0 and row["iterations_timed"] >= 1
        assert set(row["breakdown_s"]) == {"render", "apply_gradients", "distill"}
        assert all(v > 0 for v in row["breakdown_s"].values())
    # the extrapolation: the recipe's own counts (read from the YAML here too), a formula per phase
    p = load_recipe("id_to_3d").params
    counts = r["extrapolation"]["counts"]
    for phase in PHASES:
        assert counts[f"{phase}_iterations"] == p[phase].iterations
    assert (counts["geometry_iterations"], counts["texture_diffuse_iterations"], counts["texture_full_iterations"],
            counts["texture_photoreal_iterations"], counts["texture_iterations"]) == (6000, 1600, 380, 20, 2000)
    assert counts["grid_resolution"] == p["init"].dmtet.grid_resolution == 256 and counts["expressions"] == 3
    assert set(r["extrapolation"]["formula"]) == set(PHASES) | {"texture", "total"}
    est = r["estimated_minutes_this_device"]
    assert set(est) == set(PHASES) | {"texture", "total"}
    assert all(v > 0 and math.isfinite(v) for v in est.values())
    assert est["geometry"] == pytest.approx(6000 * stages["geometry"]["s_per_iteration"] / 60, abs=0.001)
    assert est["texture_diffuse"] == pytest.approx(1600 * stages["texture_diffuse"]["s_per_iteration"] / 60, abs=0.001)
    assert est["texture_full"] == pytest.approx(380 * stages["texture_full"]["s_per_iteration"] / 60, abs=0.001)
    assert est["texture"] == pytest.approx(est["texture_diffuse"] + est["texture_full"] + est["texture_photoreal"],
                                           abs=0.003)
    assert est["total"] == pytest.approx(est["geometry"] + est["texture"], abs=0.003)
    assert r["paper_v100"]["geometry"] == {"iterations": 6000, "minutes": 30}
    assert r["paper_v100"]["texture"] == {"iterations": 2000, "minutes": 15}
    # K subjects' geometry loops sharing the services: steps/s in total for each K, against K = 1
    k = r["k_subjects"]
    assert k["phase"] == "geometry" and {"1", "2"} <= set(k)
    assert all(k[n]["steps_per_s"] > 0 for n in ("1", "2"))
    assert k["1"]["speedup_vs_1"] == 1.0 and k["2"]["speedup_vs_1"] > 0
    assert k["2"]["geometry_minutes_for_k_subjects"] == pytest.approx(6000 * 2 / k["2"]["steps_per_s"] / 60, abs=0.01)
    assert set(r["not_timed"]) >= {"preprocess", "export"}
