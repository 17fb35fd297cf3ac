"""Where a subject's loop finds the services: in-process (each worker holds its own copy: tests, the
embedded default), or gRPC addresses (local processes on loopback, or a cluster)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from services.common.client import INPROCESS, RetryPolicy, ServiceCredentials

if TYPE_CHECKING:
    from services.face.client import FaceClient
    from services.guidance.client import GuidanceClient
    from services.inversion.client import InversionClient
    from services.render.client import RenderClient

__all__ = ["INPROCESS", "Endpoints", "ServiceClients", "build_clients"]


class Endpoints(BaseModel):
    """Each of face/render/guidance/inversion: "inprocess" or "HOST:PORT"."""

    model_config = ConfigDict(extra="forbid")

    face: str = INPROCESS
    render: str = INPROCESS
    guidance: str = INPROCESS
    inversion: str = INPROCESS
    guidance_config: str | None = None     # in-process guidance: its model repository YAML (None = analytic)
    inversion_models_dir: str | None = None  # in-process inversion: every generator under DIR/inversion/<name>
    token: str | None = None               # bearer token for the services (a service token when tenant is set)
    tenant: str | None = None              # the tenant the calls are made for (a job's), with a service token
    retry_budget_s: float = 120.0          # how long calls retry UNAVAILABLE (a service restarting)


@dataclass
class ServiceClients:
    """One client per service; a recipe that needs no guidance or inversion may leave it None."""

    face: "FaceClient"
    render: "RenderClient"
    guidance: "GuidanceClient | None"
    inversion: "InversionClient | None" = None

    def close(self) -> None:
        for c in (self.face, self.render, self.guidance, self.inversion):
            if c is not None:
                c.close()


def build_clients(e: Endpoints, *, face_config=None) -> ServiceClients:
    """One client per service, each from that service's connect() (gRPC with retries, or in-process).
    face_config: the in-process face service's FaceConfig (services.face.cli.config_from_args); None = its
    defaults (dlib). Cheap: an in-process inversion service loads a generator on its first call, not here."""
    from services.face.client import connect as connect_face
    from services.guidance.client import connect as connect_guidance
    from services.inversion.client import connect as connect_inversion
    from services.render.client import connect as connect_render

    retry = RetryPolicy(max_attempts=1000, max_backoff_s=2.0, budget_s=e.retry_budget_s)
    token = ServiceCredentials(e.token, e.tenant) if e.token and e.tenant else e.token
    inversion_options = {"models_dir": e.inversion_models_dir} if e.inversion_models_dir else {}
    return ServiceClients(face=connect_face(e.face, token=token, retry=retry, config=face_config),
                          render=connect_render(e.render, token=token, retry=retry),
                          guidance=connect_guidance(e.guidance, token=token, retry=retry,
                                                    config_path=e.guidance_config),
                          inversion=connect_inversion(e.inversion, token=token, retry=retry, **inversion_options))
