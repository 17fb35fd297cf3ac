"""Bearer-token authentication: token -> tenant. No tokens configured = local mode (tenant "local").

Service tokens (a tokens file's `service_tokens: {TOKEN: NAME}`) belong to HeadForge's own components (the
jobs service's Ray workers): a call with one acts for the tenant named in its ACT_FOR_HEADER metadata (the
job's tenant), so every job's scenes, caches and caps are its tenant's; without the header it is the
component's own tenant NAME. A tenant token may not act for another tenant (PERMISSION_DENIED)."""

from __future__ import annotations

import contextvars
import hmac
import os
from pathlib import Path

import yaml

from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated

LOCAL_TENANT = "local"
ACT_FOR_HEADER = "x-headforge-tenant"   # metadata: the tenant a service token's call acts for
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

    def __init__(self, tokens: dict[str, str] | None = None, service_tokens: dict[str, str] | None = None):
        self._tokens = dict(tokens or {})
        self._service = dict(service_tokens or {})

    @classmethod
    def load(cls, path: str | Path | None = None, env: str | None = None) -> "TokenStore":
        """Tokens from a YAML file ({tokens: {TOKEN: TENANT}}) and/or "tok=tenant,tok2=tenant2" text
        (the HEADFORGE_TOKENS environment variable by default). Fails closed: a tokens file that is
        empty, has no tokens, an unknown key or a malformed entry, and a malformed pair in the text,
        raise FailedPrecondition (the server refuses to start) rather than fall back to local mode."""
        tokens: dict[str, str] = {}
        service: dict[str, str] = {}
        if path:
            tokens, service = _read_tokens_file(Path(path))
        env = os.environ.get("HEADFORGE_TOKENS", "") if env is None else env
        for pair in filter(None, (p.strip() for p in env.split(","))):
            token, _, tenant = (s.strip() for s in pair.partition("="))
            if not (token and tenant):
                raise FailedPrecondition("HEADFORGE_TOKENS: every entry must be TOKEN=TENANT; got one without "
                                         "a token or a tenant", reason="BAD_TOKENS")
            tokens[token] = tenant
        return cls(tokens, service)

    @property
    def local_mode(self) -> bool:
        return not (self._tokens or self._service)

    def tenant_for(self, metadata) -> str:
        """The tenant of a call from its invocation metadata; raises Unauthenticated."""
        if self.local_mode:
            return LOCAL_TENANT
        header = next((v for k, v in (metadata or ()) if k == "authorization"), None)
        if not header or not header.lower().startswith("bearer "):
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata", reason="NO_TOKEN")
        presented = header[7:].strip().encode()
        acting_for = next((v for k, v in (metadata or ()) if k == ACT_FOR_HEADER), None)
        for token, name in self._service.items():
            if hmac.compare_digest(token.encode(), presented):
                return name if acting_for is None else _tenant_name(acting_for)
        for token, tenant in self._tokens.items():
            if hmac.compare_digest(token.encode(), presented):
                if acting_for is not None and acting_for != tenant:
                    raise PermissionDenied(f"only a service token may act for another tenant ({ACT_FOR_HEADER})",
                                           reason="NOT_A_SERVICE_TOKEN")
                return tenant
        raise Unauthenticated("unknown token", reason="BAD_TOKEN")


MAX_TENANT_CHARS = 128


def _tenant_name(value: str) -> str:
    """A tenant named by ACT_FOR_HEADER: 1..128 printable characters; InvalidArgument otherwise."""
    if not 0 < len(value) <= MAX_TENANT_CHARS or not value.isprintable() or value != value.strip():
        raise InvalidArgument(ACT_FOR_HEADER, f"a tenant name of 1..{MAX_TENANT_CHARS} printable characters")
    return value


def _read_tokens_file(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """({TOKEN: TENANT}, {SERVICE_TOKEN: NAME}) of a tokens file; FailedPrecondition naming the file and the
    problem (never a token: the message ends up in logs)."""
    def bad(problem: str) -> FailedPrecondition:
        return FailedPrecondition(f"tokens file {path}: {problem}; expected YAML {{tokens: {{TOKEN: TENANT, ...}}}} "
                                  "with at least one token (no --tokens-file = local mode)", reason="BAD_TOKENS_FILE")

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise bad(f"not YAML ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise bad("empty" if data is None else f"a {type(data).__name__}, not a mapping")
    unknown = sorted(str(k) for k in data if k not in ("tokens", "service_tokens"))
    if unknown:
        raise bad(f"unknown key(s) {unknown}")
    entries = data.get("tokens")
    if not isinstance(entries, dict) or not entries:
        raise bad("no tokens" if not entries else f"tokens is a {type(entries).__name__}, not a mapping")
    service = data.get("service_tokens") or {}
    if not isinstance(service, dict):
        raise bad(f"service_tokens is a {type(service).__name__}, not a mapping")
    for key, mapping in (("tokens", entries), ("service_tokens", service)):
        for i, (token, tenant) in enumerate(mapping.items()):
            if not isinstance(token, str) or not token.strip():
                raise bad(f"{key} entry {i}: the token must be a non-empty string")
            if not isinstance(tenant, str) or not tenant.strip():
                raise bad(f"{key} entry {i}: the {'tenant' if key == 'tokens' else 'name'} must be a non-empty string")
    if set(entries) & set(service):
        raise bad("a token is both a tenant token and a service token")
    return ({t.strip(): n.strip() for t, n in entries.items()}, {t.strip(): n.strip() for t, n in service.items()})
