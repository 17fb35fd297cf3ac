"""Auth fails closed (issue 22 item 4): a tokens file that is empty, has no tokens or a mistyped key makes
the server refuse to start with a clear message; local mode only when no tokens file is given."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.common.auth import LOCAL_TENANT, TokenStore
from services.common.errors import FailedPrecondition
from services.common.process import ROOT

BAD_FILES = {
    "empty": "",
    "only_a_comment": "# tokens: {tok: tenant}\n",
    "empty_mapping": "tokens: {}\n",
    "null_tokens": "tokens:\n",
    "mistyped_key": "token: {tok-a: tenant-a}\n",
    "extra_key": "tokens: {tok-a: tenant-a}\ntenants: {}\n",
    "list_not_mapping": "tokens: [tok-a, tenant-a]\n",
    "missing_tenant": "tokens: {tok-a: }\n",
    "not_a_mapping": "- tok-a\n",
    "not_yaml": "tokens: {tok-a: [\n",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_tokens_file_is_refused(tmp_path, monkeypatch, name):
    monkeypatch.delenv("HEADFORGE_TOKENS", raising=False)
    path = tmp_path / "tokens.yaml"
    path.write_text(BAD_FILES[name])
    with pytest.raises(FailedPrecondition) as info:
        TokenStore.load(path)
    assert str(path) in info.value.message and info.value.reason == "BAD_TOKENS_FILE"
    assert "tok-a" not in info.value.message  # no secret in the message


def test_good_file_and_local_mode(tmp_path, monkeypatch):
    monkeypatch.delenv("HEADFORGE_TOKENS", raising=False)
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens: {tok-a: tenant-a, tok-b: tenant-b}\n")
    store = TokenStore.load(path)
    assert not store.local_mode
    assert store.tenant_for([("authorization", "Bearer tok-b")]) == "tenant-b"
    assert TokenStore.load(None).tenant_for([]) == LOCAL_TENANT  # no file: local mode


def test_malformed_tokens_env_is_refused():
    with pytest.raises(FailedPrecondition):
        TokenStore.load(None, env="tok-a")
    assert TokenStore.load(None, env="").local_mode


def test_server_refuses_to_start_on_an_empty_tokens_file(tmp_path):
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens: {}\n")
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "serve", "render", "--port", "0",
                           "--tokens-file", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "serving" not in proc.stdout
    assert f"tokens file {path}: no tokens" in proc.stderr, proc.stderr[-2000:]
