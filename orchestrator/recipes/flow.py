"""Checks across a recipe's stages, at load time (before any service is called): every stage that needs
the job's scene comes after one that makes it; conversions exist; terms read only outputs the scene at
that point can render, and only what preprocess gives when a preprocess stage came first; regularisers
and export formats belong to the scene's kind. Each error names the YAML path (reason INVALID_RECIPE)."""

from __future__ import annotations

from pydantic import BaseModel

from orchestrator.recipes.schema import Recipe
from orchestrator.stages.scene_kinds import CONVERSIONS, KINDS
from services.common.errors import InvalidArgument

NEEDS_PHOTO = ("caption",)   # stages that read the preprocessed reference picture
NEEDS_SCENE = ("optimise", "refine", "texture_inpaint", "export", "turntable", "evaluate", "convert",
               "ground_truth_check")


def _bad(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(field, description, reason="INVALID_RECIPE")


def check_flow(recipe: Recipe, params: dict[str, BaseModel]) -> None:
    """InvalidArgument for the first stage that cannot run where the recipe puts it."""
    scene: str | None = None
    photo = face = fitted = generated = False
    for i, spec in enumerate(recipe.stages):
        p, where, kind = params[spec.name], f"stages[{i}].params", spec.kind
        if kind in NEEDS_SCENE and scene is None:
            raise _bad(f"stages[{i}]", f"{spec.name} ({kind}) needs the job's scene: put an init, invert or "
                                       "template_texture stage before it")
        if kind in NEEDS_PHOTO and not photo:
            raise _bad(f"stages[{i}]", f"{spec.name} ({kind}) reads the reference picture: put a preprocess stage "
                                       "before it")
        if kind == "generate":
            generated = True
        elif kind == "preprocess":
            if recipe.inputs.max_images == 0 and not generated:
                raise _bad(f"stages[{i}]", "preprocess needs a photo: the recipe takes none (inputs.max_images 0) "
                                           "and no generate stage comes before")
            photo, face = True, p.reference != "given"
        elif kind == "template_fit":
            if not face:
                raise _bad(f"stages[{i}]", "template_fit needs the photo's face: put a preprocess stage before it")
            fitted = True
        elif kind == "template_texture":
            if not fitted:
                raise _bad(f"stages[{i}]", "template_texture needs a template_fit stage before it")
            scene = "mesh"
        elif kind == "init":
            if p.start == "fitted_template" and not fitted:
                raise _bad(f"{where}.source", "fitted_template needs a template_fit stage before init")
            scene = p.representation
        elif kind == "invert":
            if p.crop == "reference" and not photo:
                raise _bad(f"stages[{i}]", "invert with crop reference needs a preprocess stage before it")
            if p.crop == "face" and not face:
                raise _bad(f"stages[{i}]", "invert needs the photo's face: put a preprocess stage before it (or "
                                           "crop: reference for a reference view already framed for the generator)")
            # the field kind is the generator's (known when the job runs); every field kind can do the same
            scene = "mesh" if p.output == "mesh" else "triplane"
        elif kind == "convert":
            if (scene, p.to) not in CONVERSIONS:
                raise _bad(f"{where}.to", f"no conversion {scene} -> {p.to}; HeadForge has {sorted(CONVERSIONS)}")
            scene = p.to
        elif kind == "optimise":
            _check_terms(p, where, scene, photo, face)
        elif kind == "export":
            for j, fmt in enumerate(p.formats):
                if fmt not in KINDS[scene]["exports"]:
                    raise _bad(f"{where}.formats[{j}]", f"a {scene} scene exports {sorted(KINDS[scene]['exports'])}, "
                                                        f"not {fmt}")
        elif kind == "texture_inpaint" and scene != "mesh":
            raise _bad(f"stages[{i}]", f"texture_inpaint paints a mesh's UV texture; the scene here is {scene}")


def _check_terms(p, where: str, scene: str, photo: bool, face: bool) -> None:
    outputs, regularizers = KINDS[scene]["outputs"], KINDS[scene]["regularizers"]
    for j, term in enumerate(p.terms):
        missing = sorted(term.render_outputs() - outputs)
        if missing:
            field = "output" if term.kind == "sds" else "kind"
            raise _bad(f"{where}.terms[{j}].{field}", f"a {scene} scene cannot render {missing}; it renders "
                                                      f"{sorted(outputs)}")
        if term.needs_photo() and not photo:
            raise _bad(f"{where}.terms[{j}]", f"a {term.kind} term with these settings reads the photo: put a "
                                              "preprocess stage before this one")
        if term.needs_face() and not face:
            raise _bad(f"{where}.terms[{j}]", f"a {term.kind} term with these settings reads the photo's face "
                                              "(identity, landmarks): a given reference has no face analysis")
    for j, reg in enumerate(p.regularizers):
        if reg.name not in regularizers:
            raise _bad(f"{where}.regularizers[{j}].name", f"a {scene} scene has the regularisers "
                                                          f"{sorted(regularizers)}, not {reg.name!r}")
