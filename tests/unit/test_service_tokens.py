"""Service tokens (services/common/auth.py): a HeadForge component's token acts for the tenant its calls
name (x-headforge-tenant), a tenant's own token cannot, and the tokens file says which is which."""

from __future__ import annotations

import pytest
import yaml

from services.common.auth import ACT_FOR_HEADER, TokenStore
from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied


def _store(tmp_path, data) -> TokenStore:
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump(data))
    return TokenStore.load(path, env="")


def _md(token: str, tenant: str | None = None):
    return [("authorization", f"Bearer {token}"), *([(ACT_FOR_HEADER, tenant)] if tenant is not None else [])]


def test_a_service_token_acts_for_the_named_tenant(tmp_path):
    store = _store(tmp_path, {"tokens": {"tok-a": "tenant-a", "tok-b": "tenant-b"},
                              "service_tokens": {"svc": "headforge-jobs"}})
    assert store.tenant_for(_md("svc", "tenant-a")) == "tenant-a"
    assert store.tenant_for(_md("svc", "tenant-b")) == "tenant-b"
    assert store.tenant_for(_md("svc")) == "headforge-jobs"
    assert store.tenant_for(_md("tok-a")) == "tenant-a"
    assert store.tenant_for(_md("tok-a", "tenant-a")) == "tenant-a"          # naming oneself is fine
    with pytest.raises(PermissionDenied) as e:
        store.tenant_for(_md("tok-a", "tenant-b"))                           # a tenant cannot act for another
    assert e.value.reason == "NOT_A_SERVICE_TOKEN"
    for bad in ("", " x", "x" * 129, "a\nb"):
        with pytest.raises(InvalidArgument):
            store.tenant_for(_md("svc", bad))


@pytest.mark.parametrize("data, words", [
    ({"tokens": {"tok": "t"}, "service_tokens": ["svc"]}, "service_tokens is a list"),
    ({"tokens": {"tok": "t"}, "service_tokens": {"svc": ""}}, "the name must be"),
    ({"tokens": {"tok": "t"}, "service_tokens": {"tok": "jobs"}}, "both a tenant token and a service token"),
    ({"service_tokens": {"svc": "jobs"}}, "no tokens"),
])
def test_bad_service_token_entries_refuse_to_start(tmp_path, data, words):
    with pytest.raises(FailedPrecondition) as e:
        _store(tmp_path, data)
    assert words in e.value.message and "svc" not in e.value.message.replace("service_tokens", "")
