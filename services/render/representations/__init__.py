"""Scene kinds by name (SCENE_KINDS: name -> base.SceneKind). Entries are lazy "module:attribute" paths
so a server only imports the kinds it uses; a new kind is its module (with a SceneKind) plus one line
here."""

from __future__ import annotations

from services.core.registry import Registry
from services.render.representations.base import SceneKind

SCENE_KINDS: Registry[SceneKind] = Registry("scene kind")
SCENE_KINDS.register("gaussians", "services.render.representations.gaussians:SCENE_KIND")
SCENE_KINDS.register("mesh", "services.render.representations.mesh:SCENE_KIND")
SCENE_KINDS.register("dmtet", "services.render.representations.dmtet:SCENE_KIND")
SCENE_KINDS.register("dmtet_expression", "services.render.representations.dmtet_expression:SCENE_KIND")
SCENE_KINDS.register("triplane", "services.render.representations.fields:TRIPLANE_KIND")
SCENE_KINDS.register("trigrid", "services.render.representations.fields:TRIGRID_KIND")
SCENE_KINDS.register("pyramid_trigrid", "services.render.representations.fields:PYRAMID_TRIGRID_KIND")
