"""Recipes that cannot run fail at load, naming the YAML path, before any service is called: a term on an
output the scene cannot render, a regulariser or export format of another kind, a stage before the scene
exists, a conversion HeadForge does not have, photo terms without preprocess, cameras out of range."""

from __future__ import annotations

import pytest

from orchestrator.recipes import load_recipe
from orchestrator.stages.scene_kinds import KINDS
from services.common.errors import InvalidArgument

INIT = "{name: init, kind: init, params: {representation: gaussians, color_from_photo: false}}"


def _recipe(*stages: str, images: int = 0) -> str:
    return (f"name: t\ninputs: {{min_images: {images}, max_images: {images}}}\nstages:\n"
            + "".join(f"  - {s}\n" for s in stages))


def _optimise(terms: str, extra: str = "") -> str:
    return f"{{name: opt, kind: optimise, params: {{iterations: 2, terms: {terms}{extra}}}}}"


def test_the_kinds_table_is_what_the_render_service_describes():
    from services.render.service import InProcessRenderClient

    described = {k.kind: k for k in InProcessRenderClient().describe().kinds}
    assert set(described) == set(KINDS)
    for name, kind in KINDS.items():
        assert kind["outputs"] == set(described[name].outputs), name
        assert kind["regularizers"] == set(described[name].regularizers), name
        assert kind["exports"] == set(described[name].export_formats), name


@pytest.mark.parametrize("stages, images, field, words", [
    (("{name: init, kind: init, params: {representation: triplane}}", _optimise("[{kind: sds, output: albedo}]")),
     0, "stages[1].params.terms[0].output", "cannot render"),
    ((INIT, _optimise("[{kind: sds}]", ", regularizers: [{name: laplacian}]")), 0,
     "stages[1].params.regularizers[0].name", "opacity_entropy"),
    ((INIT, "{name: e, kind: export, params: {formats: [glb]}}"), 0, "stages[1].params.formats[0]", "['npz', 'ply']"),
    ((_optimise("[{kind: sds}]"),), 0, "stages[0]", "needs the job's scene"),
    (("{name: init, kind: init, params: {representation: triplane}}", "{name: c, kind: convert, params: {to: gaussians}}"),
     0, "stages[1].params.to", "triplane -> gaussians"),
    ((INIT, _optimise("[{kind: reference_rgb}]")), 0, "stages[1].params.terms[0]", "preprocess"),
    ((INIT, _optimise("[{kind: sds, controls: [{kind: landmarks}]}]")), 0, "stages[1].params.terms[0]", "preprocess"),
    (("{name: p, kind: preprocess}",), 0, "stages[0]", "takes none"),
    (("{name: p, kind: preprocess}", "{name: t, kind: template_texture}"), 1, "stages[1]", "template_fit"),
    ((INIT, _optimise("[{kind: sds}]", ", cameras: {kind: list, views: [{azimuth: 0, elevation: 0}, "
                                       "{azimuth: 30, elevation: 120}]}")), 0,
     "stages[1].params.cameras.views[1].elevation", "less than or equal"),
    ((INIT, _optimise("[{kind: sds, t_range: [0.5, 0.2]}]")), 0, "stages[1].params.terms[0]", "t_min < t_max"),
    ((INIT, _optimise("[{kind: sds, every: 2, phase: 2}]")), 0, "stages[1].params.terms[0]", "phase"),
    ((INIT, _optimise("[{kind: reference_depth}]")), 0, "stages[1].params.terms[0]", "target"),
])
def test_a_recipe_that_cannot_run_fails_at_load(stages, images, field, words):
    with pytest.raises(InvalidArgument) as err:
        load_recipe(text=_recipe(*stages, images=images))
    fields = [v.field for v in err.value.violations] or [err.value.field]
    assert any(f.startswith(field) for f in fields), (fields, err.value.message)
    assert words in err.value.message, err.value.message
    assert err.value.reason == "INVALID_RECIPE"


def test_the_builtin_recipes_pass_the_checks():
    from orchestrator.recipes import builtin_names

    for name in builtin_names():
        load_recipe(name)
