"""The closed loop at reduced size, as in production: face, render and guidance (serving only the oracle,
a test prior) as processes on loopback, the job on Ray. From one frontal render of the known head, the
Gaussian check recipe must recover the views it never saw: held-out PSNR up, normal error and Chamfer
down, and the +X markings on the +X side. (The full-size figures for all three representations:
`python -m orchestrator.closed_loop`.)"""

from __future__ import annotations




def test_gaussians_recover_held_out_views_of_the_known_head_over_grpc_on_ray(tmp_path):
    from orchestrator.closed_loop import run_on_ray

    result = run_on_ray(("gaussians",), tmp_path, {"stages.optimise.iterations": "150"})["gaussians"]
    assert result["state"] == "succeeded", result["error"]
    before, after = result["ground_truth"]["before"], result["ground_truth"]["after"]
    assert after["psnr_db"] > before["psnr_db"] + 8, (before, after)
    assert after["normal_error_deg"] < before["normal_error_deg"] - 10
    assert after["chamfer"] < 0.75 * before["chamfer"]
    assert after["markings"]["correct_side"] and not before["markings"]["correct_side"]
    assert result["result_is_real"] is False and any("test prior" in w for w in result["warnings"])
