"""Recipes validate on load with errors that name the YAML path; options override by dotted path;
schedules follow threestudio's [start_step, start, end, end_step]."""

from __future__ import annotations

import pytest

from orchestrator.recipes import builtin_names, load_recipe, load_recipe_file
from orchestrator.stages.schedules import schedule_at
from services.common.errors import InvalidArgument


def test_every_builtin_recipe_loads():
    names = builtin_names()
    assert {"sds_gaussians", "analytic_prior"} <= set(names)
    for name in names:
        r = load_recipe(name)
        assert r.recipe.name == name and len(r.sha256) == 64
        assert set(r.params) == {s.name for s in r.recipe.stages}


def test_options_change_the_resolved_recipe_and_its_hash():
    base = load_recipe("sds_gaussians")
    changed = load_recipe("sds_gaussians", options={"stages.optimise.iterations": "7", "seed": "3",
                                                    "stages.optimise.terms": "[{kind: reference_rgb}]"})
    assert changed.params["optimise"].iterations == 7 and changed.recipe.seed == 3
    assert [t.kind for t in changed.params["optimise"].terms] == ["reference_rgb"]
    assert changed.sha256 != base.sha256
    assert load_recipe(text=changed.yaml).sha256 == changed.sha256   # the resolved YAML reloads identically


@pytest.mark.parametrize("kwargs,field", [
    (dict(name="nope"), "recipe_name"),
    (dict(name="sds_gaussians", options={"stages.optimise.iterations": "-5"}), "stages[2].params.iterations"),
    (dict(name="sds_gaussians", options={"stages.optimise.terms": "[{kind: sds, weight: lots}]"}),
     "stages[2].params.terms[0].weight"),
    (dict(name="sds_gaussians", options={"stages.optimise.cameras.fov": "500"}),
     "stages[2].params.cameras.fov"),
    (dict(name="sds_gaussians", options={"stages.nosuch.iterations": "5"}), "options[stages.nosuch.iterations]"),
    (dict(text="name: x\nstages: [{name: a, kind: teleport}]"), "stages[0].kind"),
    (dict(text="name: x\nstages: [{name: a, kind: export}, {name: a, kind: export}]"), "stages"),
    (dict(text="name: x\nstages: [{name: a, kind: export, params: {formats: [fbx]}}]"),
     "stages[0].params.formats[0]"),
    (dict(text="[not, a, mapping]"), "recipe_yaml"),
    (dict(text="name: x\nstages: [{name: a, kind: export}]\nextra: 1"), "extra"),
])
def test_bad_recipes_name_the_field(kwargs, field):
    with pytest.raises(InvalidArgument) as e:
        load_recipe(**kwargs)
    fields = [v.field for v in e.value.violations]
    assert any(f.startswith(field) for f in fields), fields


def test_user_recipe_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(load_recipe("analytic_prior").yaml.replace("name: analytic_prior", "name: mine"))
    assert load_recipe_file(path, {"stages.optimise.iterations": "3"}).params["optimise"].iterations == 3


def test_schedules():
    assert schedule_at(0.5, 100) == 0.5
    s = (100, 0.0, 1.0, 200)
    assert [schedule_at(s, k) for k in (0, 100, 150, 200, 999)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert schedule_at((10, 2.0, 5.0, 10), 50) == 2.0      # end_step <= start_step: constant start value


def test_every_registered_stage_kind_resolves_to_a_function():
    import inspect

    from orchestrator.stages.registry import STAGES

    for kind, spec in STAGES.items():
        module, _, name = spec.run_path.partition(":")
        run = getattr(__import__(module, fromlist=[name]), name)
        assert list(inspect.signature(run).parameters) == ["ctx", "params"], kind


def test_an_unknown_stage_kind_names_the_known_ones():
    with pytest.raises(InvalidArgument) as e:
        load_recipe(text="name: x\nstages: [{name: a, kind: teleport}]")
    assert "'teleport'" in e.value.message and "optimise" in e.value.message and e.value.reason == "INVALID_RECIPE"


def test_a_param_by_name_sets_every_stage_that_has_it_or_fails():
    assert load_recipe("fast", options={"stages.*.texture_size": "256"}).params["texture"].texture_size == 256
    text = "name: two\nstages: [{name: i, kind: init}, {name: a, kind: turntable}, {name: b, kind: turntable}]"
    params = load_recipe(text=text, options={"stages.*.frames": "8"}).params
    assert params["a"].frames == 8 and params["b"].frames == 8
    with pytest.raises(InvalidArgument) as e:
        load_recipe("analytic_prior", options={"stages.*.face_index": "1"})
    assert "face_index" in e.value.message
