"""The inversion service's generators as stages see them: finding one by name, and recording it in the report."""

from __future__ import annotations

from dataclasses import asdict

from orchestrator.stages.context import StageContext
from services.common.errors import FailedPrecondition
from services.core.models import HASH_CHARS, ModelRecord


def find_generator(ctx: StageContext, name: str):
    """(the inversion service's Description, the GeneratorInfo of `name` ("" = its default));
    FailedPrecondition naming what is missing: the service (NO_INVERSION_SERVICE), the generator (NO_GENERATOR)."""
    inversion = ctx.clients.inversion
    if inversion is None:
        raise FailedPrecondition(f"{ctx.stage} needs the inversion service", reason="NO_INVERSION_SERVICE")
    desc = inversion.describe()
    info = next((g for g in desc.generators if g.name == name or (not name and g.is_default)), None)
    if info is None or not info.available:
        known = [g.name for g in desc.generators]
        why = f"unknown generator {name!r}; configured: {known}" if info is None else \
            f"generator {info.name!r} is unavailable ({info.unavailable_reason})"
        raise FailedPrecondition(f"{ctx.stage}: {why}", reason="NO_GENERATOR")
    return desc, info


def export_gan_sample(ctx: StageContext, gan) -> tuple[object, bytes]:
    """(GeneratorInfo, field NPZ) of the sample `gan` (GanSampleParams: generator, seed, truncation_psi) of the
    inversion service's generator. The NPZ is kept in the worker's scratch: checks of one job reuse it."""
    from services.inversion.types import Latent

    _, info = find_generator(ctx, gan.generator)
    key = f"gan_sample:{info.name}:{gan.seed}:{gan.truncation_psi}"
    if key not in ctx.scratch:
        ctx.scratch[key] = ctx.clients.inversion.export_field(Latent.sample(gan.seed, info.name, gan.truncation_psi))
    return info, ctx.scratch[key]


def record_generator(ctx: StageContext, info) -> ModelRecord:
    """The generator's model record, added to the report's models (its provenance says random weights)."""
    record = ModelRecord("generator", f"inversion:{info.kind}:{info.weights_format}", info.path or info.name,
                         info.sha256[:HASH_CHARS], provenance=info.provenance)
    ctx.add_report_section("models", {"inversion": [asdict(record)]})
    return record
