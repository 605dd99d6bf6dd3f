"""``citadel apikey`` and ``citadel token`` with grants: what a key or token reaches is given when
it is made, shown in lists, kept by a rotation, and every change is in ``citadel audit``."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import json
from pathlib import Path
from typing import Any

import jwt
import pytest

from citadel.apikeys import ApiKeys
from citadel.auth import AuthError, Identity
from citadel.registry import Registry
from citadel.settings import Settings
from tests.api.conftest import JWT_SECRET
from tests.cli.test_errors import citadel, one_line

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

GRANTS = ("--collections", "team-a-*,shared", "--sources", "/srv/team-a,s3://bucket/team-a/")


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {"CITADEL_DATA_DIR": str(data_dir), **extra}


def _json(data_dir: Path, *args: str) -> Any:
    done = citadel(*args, "--json", env=_env(data_dir))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _fits(text: str) -> None:
    assert text.strip() and all(len(line) <= 80 for line in text.splitlines()), text


async def _authenticate(key: str) -> Identity:
    registry = Registry(Settings().registry_url)
    await registry.init()
    try:
        return await ApiKeys(registry).authenticate(key)
    finally:
        await registry.aclose()


def test_a_key_made_with_grants_and_an_expiry_shows_them(data_dir: Path) -> None:
    made = citadel("apikey", "create", "--name", "team a ingest", "--scopes", "search,workflows", *GRANTS,
                   "--rate-limits", "5/second;100/minute", "--expires-in", "90d", env=_env(data_dir))
    assert made.returncode == 0, made.stderr
    assert "reaches collections shared, team-a-*; sources /srv/team-a, s3://bucket/team-a/" in made.stdout
    assert "rate limits 5/second;100/minute; expires " in made.stdout and made.stderr == ""
    _fits(made.stdout)

    [key] = _json(data_dir, "apikey", "list")
    assert (key["collections"], key["sources"], key["rate_limits"]) == (
        ["shared", "team-a-*"], ["/srv/team-a", "s3://bucket/team-a/"], "5/second;100/minute")
    lifetime = dt.datetime.fromisoformat(key["expires_at"]) - dt.datetime.fromisoformat(key["created_at"])
    assert abs(lifetime - dt.timedelta(days=90)) < dt.timedelta(seconds=5)
    assert "key" not in key and key["replaced_by"] is None

    listed = citadel("apikey", "list", env=_env(data_dir)).stdout
    _fits(listed)
    first, grants, expiry = listed.splitlines()
    assert first == f"{key['key_id']}  team a ingest  active"
    assert grants.split() == ["scopes", "search,workflows;", "collections", "shared,team-a-*"]
    assert expiry.startswith("    expires ") and expiry.endswith("UTC; last used never")

    # Without grants a key reaches nothing, and says so; an admin key reaches everything.
    bare = citadel("apikey", "create", "--name", "bare", "--scopes", "search", "--json", env=_env(data_dir))
    assert bare.stderr.strip() == "note: no --collections given: it reaches no collection and no source (--sources)"
    assert json.loads(bare.stdout)["collections"] == [] and json.loads(bare.stdout)["expires_at"] is None
    admin = citadel("apikey", "create", "--name", "root", "--scopes", "admin", env=_env(data_dir))
    assert admin.stderr == "" and "reaches every collection and source (admin)" in admin.stdout
    listed = citadel("apikey", "list", env=_env(data_dir)).stdout
    _fits(listed)
    assert "collections none" in listed and "collections every collection (admin)" in listed and "never expires" in listed


def test_a_token_carries_its_grants_in_its_claims(data_dir: Path) -> None:
    env = _env(data_dir, CITADEL_JWT_SECRET=JWT_SECRET)
    made = citadel("token", "create", "--subject", "team-a", "--scopes", "search", *GRANTS, "--ttl", "15m", "--json", env=env)
    assert made.returncode == 0, made.stderr
    body = json.loads(made.stdout)
    assert (body["collections"], body["sources"]) == (["shared", "team-a-*"], ["/srv/team-a", "s3://bucket/team-a/"])
    claims = jwt.decode(body["token"], JWT_SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["scope"]) == ("team-a", "search")
    assert (claims["collections"], claims["sources"]) == (body["collections"], body["sources"])

    # As text, the token alone on stdout (for $(...)), its grants on stderr.
    text = citadel("token", "create", "--subject", "team-a", "--scopes", "search", "--collections", "shared", env=env)
    assert text.returncode == 0 and text.stdout.count(".") == 2 and len(text.stdout.split()) == 1
    assert jwt.decode(text.stdout.strip(), JWT_SECRET, algorithms=["HS256"])["collections"] == ["shared"]
    assert "reaches collections shared; sources none" in " ".join(text.stderr.split())
    bare = citadel("token", "create", "--subject", "x", "--scopes", "search", "--json", env=env)
    assert "no --collections given" in bare.stderr and jwt.decode(
        json.loads(bare.stdout)["token"], JWT_SECRET, algorithms=["HS256"])["collections"] == []


def test_rotation_keeps_the_grants_and_the_trail_names_every_change_without_a_key(data_dir: Path) -> None:
    old = _json(data_dir, "apikey", "create", "--name", "ingest", "--scopes", "search,workflows", *GRANTS, "--expires-in", "30d")
    rotated = _json(data_dir, "apikey", "rotate", old["key_id"], "--grace", "0")
    new = rotated["created"]
    assert rotated["rotated"]["key_id"] == old["key_id"] and rotated["rotated"]["replaced_by"] == new["key_id"]
    with pytest.raises(AuthError, match="revoked"):
        asyncio.run(_authenticate(old["key"]))
    identity = asyncio.run(_authenticate(new["key"]))
    assert identity.grants.collections == ("shared", "team-a-*") and identity.grants.sources == ("/srv/team-a", "s3://bucket/team-a/")
    assert identity.scopes == {"search", "workflows"} and (new["name"], new["collections"]) == ("ingest", old["collections"])

    # With a grace period the old key works on until it ends; the list says what replaced it.
    graced = citadel("apikey", "rotate", new["key_id"], "--grace", "2h", env=_env(data_dir))
    assert graced.returncode == 0, graced.stderr
    assert f"{new['key_id']} keeps working until " in graced.stdout and "then is refused" in graced.stdout
    newest = graced.stdout.strip().splitlines()[-1]
    assert asyncio.run(_authenticate(new["key"])).subject == f"key:{new['key_id']}"
    listed = citadel("apikey", "list", env=_env(data_dir)).stdout
    assert f"{new['key_id']}  ingest  rotated -> {newest.split('_')[1]}" in listed
    revoked = _json(data_dir, "apikey", "revoke", newest.split("_")[1])
    assert revoked["revoked_at"]

    trail = _json(data_dir, "audit")
    actions = [(line["action"], line["target"]) for line in trail]
    assert actions == [
        ("key.created", f"key:{old['key_id']}"), ("key.created", f"key:{new['key_id']}"), ("key.rotated", f"key:{old['key_id']}"),
        ("key.created", f"key:{revoked['key_id']}"), ("key.rotated", f"key:{new['key_id']}"), ("key.revoked", f"key:{revoked['key_id']}"),
    ]
    assert {line["actor"] for line in trail} == {f"cli:{getpass.getuser()}"} and {line["outcome"] for line in trail} == {"ok"}
    text = citadel("audit", env=_env(data_dir)).stdout
    _fits(text)
    for output in (json.dumps(trail), text):
        assert "ctd_" not in output and old["key"] not in output and new["key"] not in output and newest not in output
    assert [line["action"] for line in _json(data_dir, "audit", "--limit", "2")] == ["key.rotated", "key.revoked"]
    assert _json(data_dir, "audit", "--actor", "nobody") == [] and len(_json(data_dir, "audit", "--since", "1h")) == 6
    assert _json(data_dir, "audit", "--since", "2999-01-01T00:00") == []


@pytest.mark.parametrize(("args", "says"), [
    (("apikey", "create", "--name", "x", "--scopes", "search", "--expires-in", "3w"), "--expires-in '3w': give a duration"),
    (("apikey", "create", "--name", "x", "--scopes", "search", "--collections", "team a"), "collection grant 'team a'"),
    (("apikey", "create", "--name", "x", "--scopes", "search", "--sources", "relative/dir"), "source grant 'relative/dir'"),
    (("apikey", "create", "--name", "x", "--scopes", "search", "--rate-limits", "1000/second"), "above the service's 20/second"),
    (("apikey", "create", "--name", "x", "--scopes", "search", "--rate-limits", "lots"), "--rate-limits 'lots'"),
    (("apikey", "rotate", "0123456789ab", "--grace", "soon"), "--grace 'soon': give a duration"),
    (("apikey", "rotate", "0123456789ab"), "no API key '0123456789ab'"),
    (("token", "create", "--subject", "x", "--scopes", "search", "--collections", "a/b"), "collection grant 'a/b'"),
    (("audit", "--since", "yesterday"), "--since 'yesterday': give a duration such as 1h"),
])
def test_bad_options_are_one_line_errors(data_dir: Path, args: tuple[str, ...], says: str) -> None:
    done = citadel(*args, env=_env(data_dir, CITADEL_JWT_SECRET=JWT_SECRET))
    assert done.returncode == 2 and says in one_line(done), done.stderr
    assert done.stdout == ""
