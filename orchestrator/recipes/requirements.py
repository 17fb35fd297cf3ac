"""What a recipe needs from the services, checked when a job starts, before its first stage: every guidance
backbone a stage names and every captioner a caption stage needs (with the capability that stage calls: Generate, Distill, Denoise, Inpaint, the identity
adapter and ControlNets it conditions on, the normal / depth output a geometry stage reads), face embeddings of the
size an identity adapter takes, the recogniser an evaluate stage's identity_model names, LPIPS weight files
that perceptual losses name, every
inversion generator (invert, an init or ground-truth GAN sample) and LPIPS weights when an inversion's loss
is LPIPS alone. A job that cannot run fails at once naming each thing to configure (FailedPrecondition
MODELS_MISSING), not hours later in its fifth stage."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.stages.params import (CaptionParams, EvaluateParams, GenerateParams, GeometryTargetsParams,
                                        GroundTruthCheckParams, GroundTruthTargetsParams, InitParams, InvertParams,
                                        RefineParams, TextureInpaintParams)
from services.common.errors import FailedPrecondition


@dataclass(frozen=True)
class GuidanceNeed:
    """One guidance use of a stage: the backbone ("" = the default), the capability it calls, and what the call
    conditions on: an identity adapter ("" = the backbone's first) when identity, ControlNets (kind, name ("" =
    the backbone's one of that kind)), the output kind the stage reads (None = any)."""

    stage: str
    backbone: str
    capability: str
    identity: bool = False
    identity_adapter: str = ""
    controls: tuple[tuple[str, str], ...] = ()
    output_kind: str | None = None
    loras: tuple[str, ...] = ()
    expression: bool = False


def _guidance_needs(loaded) -> list[GuidanceNeed]:
    needs = []
    for name, p in loaded.params.items():
        ident = dict(identity=getattr(p, "identity_scale", 0) > 0, identity_adapter=getattr(p, "identity_adapter", ""))
        if isinstance(p, GenerateParams):
            needs.append(GuidanceNeed(name, p.backbone, "generate"))
        elif isinstance(p, GeometryTargetsParams):
            canny = (("canny", p.canny_name),) if p.canny_control > 0 else ()
            needs += [GuidanceNeed(name, b, "generate", **ident, controls=canny, output_kind=kind)
                      for kind, b in (("normal", p.normal_backbone), ("depth", p.depth_backbone)) if b]
        elif isinstance(p, RefineParams):
            normal = (("normal", ""),) if p.normal_control > 0 else ()
            needs.append(GuidanceNeed(name, p.backbone, "denoise", **ident, controls=normal))
        elif isinstance(p, TextureInpaintParams):
            normal = (("normal", ""),) if p.normal_control > 0 else ()
            needs.append(GuidanceNeed(name, p.backbone, "inpaint", **ident, controls=normal))
        for t in getattr(p, "terms", ()):
            if t.kind == "sds":
                needs.append(GuidanceNeed(name, t.backbone, "distill", t.identity_scale > 0, t.identity_adapter,
                                          tuple((c.kind, c.name) for c in t.controls),
                                          loras=tuple(lora.name for lora in t.loras), expression=t.expression_scale > 0))
    return needs


def guidance_backbones(loaded) -> set[str]:
    """Every guidance backbone name the recipe's stages call ("" = the guidance service's default): the report
    describes (and flags the provenance of) exactly these."""
    return {need.backbone for need in _guidance_needs(loaded)}


def _guidance_problems(need: GuidanceNeed, info) -> list[str]:
    """What backbone `info` lacks for `need`."""
    where = f"{need.stage}: guidance backbone {info.name!r}"
    problems = []
    if need.capability != "distill" and not getattr(info, need.capability):
        problems.append(f"{where} cannot {need.capability}")
    if need.output_kind and info.output_kind != need.output_kind:
        problems.append(f"{where} makes {info.output_kind} pictures, the stage needs {need.output_kind} maps "
                        "(output_kind in the model repository)")
    if need.identity:
        adapters = list(info.identity_adapters)
        if not adapters or (need.identity_adapter and need.identity_adapter not in adapters):
            problems.append(f"{where} has no identity adapter {need.identity_adapter or ''!s}".rstrip() +
                            f" (loaded: {adapters}); add an IP-Adapter FaceID to its model repository entry")
    for kind, name in need.controls:
        found = info.control(name) if name else next((c for c in info.controls if c.kind == kind), None)
        if found is None:
            problems.append(f"{where} has no {name or kind} ControlNet (loaded: {[c.name for c in info.controls]})")
    loaded_loras = [lora.name for lora in info.loras]
    for lora in need.loras:
        if lora not in loaded_loras:
            problems.append(f"{where} has no LoRA {lora!r} (loaded: {loaded_loras}); add it to the backbone's `loras`")
    if need.expression and not info.expression_adapter:
        problems.append(f"{where} has no expression adapter; add one to its `expression_adapters` (README: expression "
                        "adapter format)")
    return problems


def _on_job_machine(path: str, models_dir: str | None) -> str:
    """A model path a recipe names as the job's machine sees it: relative paths under models_dir (as
    StageContext.model_path resolves them)."""
    return path if not path or os.path.isabs(path) or not models_dir else os.path.join(models_dir, path)


def _environment_problems(loaded, models_dir: str | None) -> list[str]:
    """The environment-map folders that pbr shading names and the job's machine lacks (or holds no .hdr in)."""
    problems = []
    for name, p in loaded.params.items():
        spec = getattr(p, "shading", None)
        if spec is None or not spec.reads_files:
            continue
        folder = Path(_on_job_machine(spec.environments, models_dir))
        if not folder.is_dir() or not any(folder.glob("*.hdr")):
            problems.append(f"{name}: no Radiance .hdr environment maps in {str(folder)!r} (shading.environments); put "
                            "HDR maps there (README: environment maps) or use environments: procedural")
    return problems


def _lpips_files(loaded, models_dir: str | None) -> list[str]:
    """The LPIPS weight files that perceptual terms and refine stages name and the job's machine lacks."""
    problems = []
    for name, p in loaded.params.items():
        files = [(t.lpips_vgg, t.lpips_lin) for t in getattr(p, "terms", ()) if t.kind == "perceptual"]
        if isinstance(p, RefineParams) and p.perceptual > 0:
            files.append((p.lpips_vgg, p.lpips_lin))
        for vgg, lin in files:
            for f in (vgg, lin):
                path = _on_job_machine(f, models_dir)
                if f and not os.path.exists(path):
                    problems.append(f"{name}: LPIPS weights {f!r} not found ({path}); put VGG16 / LPIPS lin weights "
                                    "there (README: LPIPS)")
    return problems


def _inversion_needs(loaded) -> list[tuple[str, str, bool]]:
    """(stage, generator name or "" for the default, whether LPIPS weights are needed) per inversion use."""
    needs = []
    for name, p in loaded.params.items():
        if isinstance(p, InvertParams):
            needs.append((name, p.generator, p.l2_weight == 0 and p.lpips_weight > 0))
        elif isinstance(p, InitParams) and p.start == "gan_sample":
            needs.append((name, p.gan.generator, False))
        elif isinstance(p, (GroundTruthCheckParams, GroundTruthTargetsParams)) and p.truth == "gan_sample":
            needs.append((name, p.gan.generator, False))
    return needs


def _identity_problems(needs: list[GuidanceNeed], by_name: dict, default, clients) -> list[str]:
    """An identity adapter reads the face service's embeddings: their size must be the adapter's (IP-Adapter
    FaceID: a 512-d ArcFace embedding, which dlib's 128-d descriptor is not)."""
    wanted = {}
    for need in needs:
        info = by_name.get(need.backbone) if need.backbone else default
        if need.identity and info is not None and info.identity_adapters and info.identity_embedding_dim:
            wanted.setdefault(info.identity_embedding_dim, []).append(f"{need.stage} ({info.name})")
    if not wanted:
        return []
    if getattr(clients, "face", None) is None:
        return [f"stages {sorted({s for v in wanted.values() for s in v})} condition on the photo's identity and "
                "need the face service"]
    face = clients.face.describe()
    return [f"{', '.join(stages)}: the identity adapter takes {dim}-d embeddings, the face service's recogniser "
            f"{face.identity_backend!r} gives {face.embedding_dim}-d ones; serve face with a recogniser of that size "
            "(an ArcFace InsightFace pack: --insightface-dir, README: face models)"
            for dim, stages in wanted.items() if dim != face.embedding_dim]


def _caption_problems(loaded, clients, prompt: str | None) -> list[str]:
    """A caption stage naming a captioner the guidance service does not list; one that would find no captioner
    with fallback "fail", or with fallback "job_prompt" and no job prompt (prompt None = not known: not checked)."""
    stages = [(name, p) for name, p in loaded.params.items() if isinstance(p, CaptionParams)]
    if not stages:
        return []
    if clients.guidance is None:
        listed = []
    else:
        listed = [c.name for c in clients.guidance.describe().captioners]
    problems = []
    for name, p in stages:
        if p.captioner and listed and p.captioner not in listed:
            problems.append(f"{name}: captioner {p.captioner!r} is not configured (configured: {sorted(listed)}); add "
                            "it to the guidance service's `captioners:` (README: guidance service)")
        elif not listed and (p.fallback == "fail" or p.captioner):
            problems.append(f"{name}: no captioner is configured in the guidance service (fallback {p.fallback}); add "
                            "a BLIP-2 or BLIP folder to its `captioners:`")
        elif not listed and prompt is not None and not prompt:
            problems.append(f"{name}: no captioner is configured in the guidance service and the job has no prompt "
                            "to fall back on; give a prompt or add a captioner")
    return problems


def identity_model_problem(params: EvaluateParams, face_client) -> str | None:
    """A problem line when an evaluate stage's identity_model names a recogniser the face service does not run
    (None: fine). The face service embeds with the one recogniser it was started with."""
    if not params.identity_model:
        return None
    if face_client is None:
        return f"identity_model {params.identity_model!r} needs the face service"
    running = face_client.describe().identity_backend
    if running != params.identity_model:
        return (f"identity_model {params.identity_model!r}, but the face service embeds with {running!r} (serve face "
                f"with that recogniser, e.g. --recognizer {params.identity_model} and its model file: "
                "--cosface-onnx FILE for cosface, --adaface-onnx FILE for adaface)")
    return None


def _identity_model_problems(loaded, clients) -> list[str]:
    """Every evaluate stage whose identity_model is not the recogniser the face service runs."""
    face = getattr(clients, "face", None)
    return [f"{name}: {problem}" for name, p in loaded.params.items() if isinstance(p, EvaluateParams)
            for problem in [identity_model_problem(p, face)] if problem]


def missing(loaded, clients, models_dir: str | None = None, prompt: str | None = None) -> list[str]:
    """One line per thing the services (and the job's models directory) lack for this recipe (empty: it can
    run). prompt: the job's prompt ("" = none; None = not known, so a caption stage's fallback to it is not
    checked)."""
    problems: list[str] = _lpips_files(loaded, models_dir)
    problems += _environment_problems(loaded, models_dir)
    problems += _caption_problems(loaded, clients, prompt)
    problems += _identity_model_problems(loaded, clients)
    guidance = _guidance_needs(loaded)
    if guidance:
        if clients.guidance is None:
            problems.append(f"stages {sorted({n.stage for n in guidance})} need the guidance service")
        else:
            infos = clients.guidance.describe().backbones
            by_name = {info.name: info for info, _ in infos}
            default = next((info for info, is_default in infos if is_default), None)
            for need in guidance:
                info = by_name.get(need.backbone) if need.backbone else default
                if info is None:
                    problems.append(f"{need.stage}: guidance backbone {need.backbone!r} is not configured (configured: "
                                    f"{sorted(by_name)}); add it to the guidance service's model repository")
                else:
                    problems += _guidance_problems(need, info)
            problems += _identity_problems(guidance, by_name, default, clients)
    inversion = _inversion_needs(loaded)
    if inversion:
        if clients.inversion is None:
            problems.append(f"stages {sorted({s for s, _, _ in inversion})} need the inversion service")
        else:
            desc = clients.inversion.describe()
            by_name = {g.name: g for g in desc.generators}
            default = next((g for g in desc.generators if g.is_default), None)
            for stage, generator, lpips in inversion:
                info = by_name.get(generator) if generator else default
                if info is None:
                    problems.append(f"{stage}: inversion generator {generator!r} is not configured (configured: "
                                    f"{sorted(by_name)}); convert its checkpoint with `headforge models convert-gan`")
                elif not info.available:
                    problems.append(f"{stage}: inversion generator {info.name!r} is unavailable "
                                    f"({info.unavailable_reason})")
                if lpips and desc.lpips in ("", "none"):
                    problems.append(f"{stage}: the inversion loss is LPIPS alone (l2_weight 0) but the inversion "
                                    f"service has no LPIPS weights ({desc.lpips_reason or 'none configured'})")
    return problems


def check(loaded, clients, models_dir: str | None = None, prompt: str | None = None) -> None:
    """FailedPrecondition MODELS_MISSING listing missing() when it is not empty."""
    problems = missing(loaded, clients, models_dir, prompt)
    if problems:
        raise FailedPrecondition("the services lack what this recipe needs: " + "; ".join(problems),
                                 reason="MODELS_MISSING", metadata={"missing": str(len(problems))})


def check_photo(loaded, state: dict) -> None:
    """Right after preprocess, before any GPU stage: FailedPrecondition when the photo's face lacks what a later
    stage conditions on: an identity embedding (a stage or sds term with identity_scale > 0; NO_EMBEDDING) or
    MediaPipe's 478 landmarks (a landmarks control with points 478; NO_DENSE_LANDMARKS). A reference given
    without face analysis is not checked here (its stages say what they lack)."""
    if "photo" not in state:
        return
    identity, dense = [], []
    for name, p in loaded.params.items():
        terms = [t for t in getattr(p, "terms", ()) if t.kind == "sds"]
        if getattr(p, "identity_scale", 0) > 0 or any(t.identity_scale > 0 for t in terms):
            identity.append(name)
        if any(c.kind == "landmarks" and c.points == 478 for t in terms for c in t.controls):
            dense.append(name)
    if identity and "embedding" not in state.get("reference", {}):
        raise FailedPrecondition(f"the face service gave no identity embedding for this photo, and stages {identity} "
                                 "condition on it (serve face with a recogniser)", reason="NO_EMBEDDING")
    if dense and state["photo"].get("landmarks") != 478:
        raise FailedPrecondition(f"the face model found 68 landmarks only on this photo, and stages {dense} draw "
                                 "MediaPipe's 478 (serve face with --detector auto or mediapipe; auto falls back to "
                                 "dlib's 68 where MediaPipe finds no face)", reason="NO_DENSE_LANDMARKS")
