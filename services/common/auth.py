"""Bearer-token authentication: token -> tenant. No tokens configured = local mode (tenant "local")."""

from __future__ import annotations

import contextvars
import hmac
import os
from pathlib import Path

import yaml

from services.common.errors import Unauthenticated

LOCAL_TENANT = "local"
_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("headforge_tenant", default=LOCAL_TENANT)


def current_tenant() -> str:
    """The tenant of the request being handled on this thread ("local" outside a request)."""
    return _tenant.get()


def set_tenant(tenant: str) -> contextvars.Token:
    return _tenant.set(tenant)


def reset_tenant(token: contextvars.Token) -> None:
    _tenant.reset(token)


class TokenStore:
    """Maps bearer tokens to tenants. Empty store = local mode, every call is tenant "local"."""

    def __init__(self, tokens: dict[str, str] | None = None):
        self._tokens = dict(tokens or {})

    @classmethod
    def load(cls, path: str | Path | None = None, env: str | None = None) -> "TokenStore":
        """Tokens from a YAML file ({tokens: {TOKEN: TENANT}}) and/or "tok=tenant,tok2=tenant2" text
        (the HEADFORGE_TOKENS environment variable by default)."""
        tokens: dict[str, str] = {}
        if path:
            data = yaml.safe_load(Path(path).read_text()) or {}
            tokens.update({str(k): str(v) for k, v in (data.get("tokens") or {}).items()})
        env = os.environ.get("HEADFORGE_TOKENS", "") if env is None else env
        for pair in filter(None, (p.strip() for p in env.split(","))):
            token, _, tenant = pair.partition("=")
            if token and tenant:
                tokens[token] = tenant
        return cls(tokens)

    @property
    def local_mode(self) -> bool:
        return not self._tokens

    def tenant_for(self, metadata) -> str:
        """The tenant of a call from its invocation metadata; raises Unauthenticated."""
        if self.local_mode:
            return LOCAL_TENANT
        header = next((v for k, v in (metadata or ()) if k == "authorization"), None)
        if not header or not header.lower().startswith("bearer "):
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata", reason="NO_TOKEN")
        presented = header[7:].strip()
        for token, tenant in self._tokens.items():
            if hmac.compare_digest(token.encode(), presented.encode()):
                return tenant
        raise Unauthenticated("unknown token", reason="BAD_TOKEN")
