"""Recipes: built-in YAML files in orchestrator/recipes/builtin/, or a user's own file or text, validated
on load with options applied (`headforge recipes` lists them)."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from orchestrator.recipes.flow import check_flow
from orchestrator.recipes.schema import Recipe
from orchestrator.stages.registry import STAGES
from services.common.errors import FieldViolation, InvalidArgument

BUILTIN = Path(__file__).parent / "builtin"


@dataclass
class LoadedRecipe:
    recipe: Recipe
    params: dict[str, BaseModel]      # stage name -> validated params
    yaml: str                         # the resolved recipe (options applied, defaults filled)
    sha256: str
    source: str                       # built-in name or "inline"


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN.glob("*.yaml"))


def _path_of(loc: tuple, data: dict) -> str:
    """A pydantic error location as a YAML path. Tagged unions (cameras: {kind: ring, ...}) put the tag in
    the location; it is not in the YAML, so it is left out."""
    parts, node = [], data
    for item in loc:
        if isinstance(node, dict) and item not in node and node.get("kind") == item:
            continue
        parts.append(f"[{item}]" if isinstance(item, int) else ("." if parts else "") + str(item))
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    return "".join(parts)


def _allowed_fields(model: type[BaseModel], loc: tuple, data: Any) -> list[str]:
    """The field names the YAML mapping holding loc[-1] may have, from the model's JSON schema (following
    lists, optionals and tagged unions, chosen by the mapping's `kind`)."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})

    def resolve(node: dict, value: Any) -> dict:
        while True:
            if "$ref" in node:
                node = defs[node["$ref"].rsplit("/", 1)[-1]]
                continue
            options = node.get("oneOf") or node.get("anyOf")
            if not options:
                return node
            options = [defs[o["$ref"].rsplit("/", 1)[-1]] if "$ref" in o else o for o in options]
            kind = value.get("kind") if isinstance(value, dict) else None
            tagged = [o for o in options if o.get("properties", {}).get("kind", {}).get("const") == kind]
            node = (tagged or [o for o in options if "properties" in o or "items" in o] or [{}])[0]

    node, value = resolve(schema, data), data
    for item in loc[:-1]:
        if isinstance(item, int):
            node = node.get("items", {})
            value = value[item] if isinstance(value, list) and item < len(value) else None
        elif item in node.get("properties", {}):
            node = node["properties"][item]
            value = value.get(item) if isinstance(value, dict) else None
        else:   # a tagged union's tag (pydantic puts it in the location)
            continue
        node = resolve(node, value)
    return sorted(node.get("properties", {}))


def _violation(e: dict, prefix: str, data: dict, model: type[BaseModel]) -> FieldViolation:
    """One pydantic error as a FieldViolation on the YAML path; an unknown field says which fields the
    mapping allows (pydantic says only "Extra inputs are not permitted")."""
    path = prefix + _path_of(e["loc"], data) or "recipe_yaml"
    if e["type"] == "extra_forbidden":
        allowed = _allowed_fields(model, e["loc"], data)
        return FieldViolation(path, f"unknown field {e['loc'][-1]!r}; allowed here: {', '.join(allowed)}")
    return FieldViolation(path, e["msg"])


def _invalid(err: ValidationError, prefix: str, data: dict, model: type[BaseModel]) -> InvalidArgument:
    violations = [_violation(e, prefix, data, model) for e in err.errors()]
    first = violations[0]
    e = InvalidArgument(first.field, first.description, reason="INVALID_RECIPE")
    e.violations = violations
    return e


MAX_RECIPE_CHARS = 256 << 10   # jobs.proto SubmitJobRequest.recipe_yaml
MAX_YAML_DEPTH = 32            # nesting of mappings and sequences (recipes use about 6)


def _check_yaml_shape(text: str, field: str, limit: int = MAX_RECIPE_CHARS) -> None:
    """InvalidArgument for YAML too long, nested deeper than MAX_YAML_DEPTH or using aliases, checked on
    the event stream (iterative) before anything recursive (the composer, deepcopy, pydantic) sees it: a
    deeply nested document overflows their recursion, and aliases can expand exponentially."""
    if len(text) > limit:
        raise InvalidArgument(field, f"at most {limit} characters, got {len(text)}", reason="INVALID_RECIPE")
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise InvalidArgument(field, f"nested deeper than {MAX_YAML_DEPTH} levels",
                                          reason="INVALID_RECIPE")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent):
                raise InvalidArgument(field, "YAML aliases (*name) are not accepted", reason="INVALID_RECIPE")
    except yaml.YAMLError as e:
        raise InvalidArgument(field, f"not valid YAML: {e}", reason="INVALID_RECIPE") from None


def _apply_option(data: dict, dotted: str, raw: str) -> None:
    if len(dotted) > 256 or dotted.count(".") >= MAX_YAML_DEPTH // 2:
        raise InvalidArgument("options", f"an option path is at most 256 characters and {MAX_YAML_DEPTH // 2} "
                              "keys deep", reason="INVALID_RECIPE")
    _check_yaml_shape(raw, f"options[{dotted}]", limit=64 << 10)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise InvalidArgument(f"options[{dotted}]", f"not valid YAML: {e}") from None
    keys = dotted.split(".")
    if not all(keys):
        raise InvalidArgument(f"options[{dotted}]", "an option path is dot-separated non-empty keys",
                              reason="INVALID_RECIPE")
    node: Any = data
    if keys[:2] == ["stages", "*"] and len(keys) == 3:   # every stage whose kind has this param
        stages = [s for s in data.get("stages", []) if isinstance(s, dict) and s.get("kind") in STAGES
                  and keys[2] in STAGES.get(s["kind"]).params.model_fields]
        if not stages:
            raise InvalidArgument(f"options[{dotted}]", f"no stage of recipe {data.get('name', '')!r} has a "
                                  f"{keys[2]!r} parameter")
        for stage in stages:
            stage.setdefault("params", {})[keys[2]] = value
        return
    if keys[0] == "stages" and len(keys) >= 3:
        stage = next((s for s in data.get("stages", []) if s.get("name") == keys[1]), None)
        if stage is None:
            raise InvalidArgument(f"options[{dotted}]", f"no stage named {keys[1]!r}")
        node, keys = stage.setdefault("params", {}), keys[2:]
    for k in keys[:-1]:
        if not isinstance(node, dict):
            raise InvalidArgument(f"options[{dotted}]", f"{k!r} is not a mapping")
        node = node.setdefault(k, {})
    if not isinstance(node, dict):
        raise InvalidArgument(f"options[{dotted}]", "does not lead to a mapping")
    node[keys[-1]] = value


def load_recipe(name: str = "", text: str = "", options: dict[str, str] | None = None) -> LoadedRecipe:
    """A built-in recipe by name, or YAML text; options by dotted path ("stages.optimise.iterations": "500"),
    "stages.*.PARAM" setting PARAM in every stage that has it (InvalidArgument when none has).
    InvalidArgument (reason INVALID_RECIPE) names the YAML path of every bad field."""
    if bool(name) == bool(text):
        raise InvalidArgument("recipe", "give a recipe name or recipe YAML, not both or neither")
    if name:
        if name not in builtin_names():
            raise InvalidArgument("recipe_name", f"unknown recipe {name!r}; built-in: {builtin_names()}",
                                  reason="UNKNOWN_RECIPE")
        text = (BUILTIN / f"{name}.yaml").read_text()
    _check_yaml_shape(text, "recipe_yaml")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidArgument("recipe_yaml", f"not valid YAML: {e}", reason="INVALID_RECIPE") from None
    if not isinstance(data, dict):
        raise InvalidArgument("recipe_yaml", "must be a mapping with name and stages", reason="INVALID_RECIPE")
    data = copy.deepcopy(data)
    for dotted, raw in (options or {}).items():
        _apply_option(data, dotted, raw)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise _invalid(e, "", data, Recipe) from None
    params = {}
    for i, stage in enumerate(recipe.stages):
        if stage.kind not in STAGES:
            raise InvalidArgument(f"stages[{i}].kind", f"unknown stage kind {stage.kind!r}; known: "
                                  f"{STAGES.names()}", reason="INVALID_RECIPE")
        try:
            params[stage.name] = STAGES.get(stage.kind).params.model_validate(stage.params)
        except ValidationError as e:
            raise _invalid(e, f"stages[{i}].params.", stage.params, STAGES.get(stage.kind).params) from None
    check_flow(recipe, params)
    resolved = recipe.model_dump(mode="json")
    for stage in resolved["stages"]:
        stage["params"] = params[stage["name"]].model_dump(mode="json")
    out = yaml.safe_dump(resolved, sort_keys=False)
    return LoadedRecipe(recipe, params, out, hashlib.sha256(out.encode()).hexdigest(), name or "inline")


def load_recipe_file(path: str | Path, options: dict[str, str] | None = None) -> LoadedRecipe:
    return load_recipe(text=Path(path).read_text(), options=options)
