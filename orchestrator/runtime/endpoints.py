"""Where a subject's loop finds the services: in-process (each worker holds its own copy: tests, the
embedded default), or gRPC addresses (local processes on loopback, or a cluster)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from services.common.client import RetryPolicy

INPROCESS = "inprocess"


class Endpoints(BaseModel):
    """Each of face/render/guidance: "inprocess" or "HOST:PORT"."""

    model_config = ConfigDict(extra="forbid")

    face: str = INPROCESS
    render: str = INPROCESS
    guidance: str = INPROCESS
    guidance_config: str | None = None     # in-process guidance: its model repository YAML (None = analytic)
    token: str | None = None               # bearer token for the services
    retry_budget_s: float = 120.0          # how long calls retry UNAVAILABLE (a service restarting)


@dataclass
class ServiceClients:
    face: object
    render: object
    guidance: object

    def close(self) -> None:
        for c in (self.face, self.render, self.guidance):
            c.close()


def build_clients(e: Endpoints) -> ServiceClients:
    from services.face.client import GrpcFaceClient, InProcessFaceClient
    from services.guidance.client import GrpcGuidanceClient, InProcessGuidanceClient
    from services.render.client import GrpcRenderClient, InProcessRenderClient

    retry = RetryPolicy(max_attempts=1000, max_backoff_s=2.0, budget_s=e.retry_budget_s)
    face = InProcessFaceClient() if e.face == INPROCESS else GrpcFaceClient(e.face, token=e.token, retry=retry)
    render = InProcessRenderClient() if e.render == INPROCESS else GrpcRenderClient(e.render, token=e.token,
                                                                                     retry=retry)
    if e.guidance == INPROCESS:
        from services.guidance.config import GuidanceConfig, load_config
        from services.guidance.service import GuidanceService

        config = load_config(e.guidance_config) if e.guidance_config else GuidanceConfig()
        guidance = InProcessGuidanceClient(GuidanceService(config))
    else:
        guidance = GrpcGuidanceClient(e.guidance, token=e.token, retry=retry)
    return ServiceClients(face, render, guidance)
