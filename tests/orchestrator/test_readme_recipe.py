"""The recipe example in the README's "recipe language on one screen" loads (the docs cannot rot)."""

from __future__ import annotations

import re

from orchestrator.recipes import load_recipe
from services.common.process import ROOT


def test_the_readme_recipe_example_loads():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"### The recipe language on one screen\n\n```yaml\n(.*?)```", text, re.S).group(1)
    loaded = load_recipe(text=block)
    assert [s.kind for s in loaded.recipe.stages] == ["preprocess", "init", "optimise", "convert", "texture_inpaint",
                                                      "refine", "export", "evaluate"]
    terms = loaded.params["coarse"].terms
    assert terms[2].t_anneal[1] == (500, 0.02, 0.5) and terms[3].output == "normal_camera" and terms[3].phase == 1
