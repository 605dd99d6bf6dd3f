"""Bearer tokens and API keys: every way a credential can be wrong is refused, with a reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from citadel.apikeys import ApiKeys
from citadel.apisettings import ApiSettings
from citadel.auth import AuthError, TokenVerifier, hash_key, mint_token, parse_scopes, parse_ttl
from citadel.errors import ConfigurationError
from citadel.registry import Registry, api_keys
from citadel.settings import Settings

SECRET = "s" * 40


def hs(claims: dict, secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=alg)


def now() -> int:
    return int(time.time())


def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthError) as caught:
        verifier.verify(token)
    return caught.value.reason


def test_a_minted_token_verifies_with_its_scopes_and_subject() -> None:
    settings = ApiSettings(jwt_secret=SECRET, jwt_issuer="citadel", jwt_audience="platform")
    identity = TokenVerifier(settings).verify(mint_token(settings, "ops", ["search", "metrics"], 60))
    assert identity.subject == "jwt:ops" and identity.scopes == {"search", "metrics"} and identity.kind == "jwt"
    assert identity.allows("search") and not identity.allows("embeddings")


def test_every_bad_token_is_refused_with_its_reason() -> None:
    settings = ApiSettings(jwt_secret=SECRET, jwt_issuer="citadel", jwt_audience="platform", jwt_leeway_s=5)
    verifier = TokenVerifier(settings)
    good = {"sub": "u", "scope": "admin", "iss": "citadel", "aud": "platform", "exp": now() + 60}
    assert refused(verifier, hs({**good, "exp": now() - 60})) == "expired"
    assert refused(verifier, hs({**good, "nbf": now() + 60})) == "not_yet_valid"
    assert refused(verifier, hs({**good, "aud": "someone-else"})) == "audience"
    assert refused(verifier, hs({**good, "iss": "evil"})) == "issuer"
    assert refused(verifier, hs({k: v for k, v in good.items() if k != "exp"})) == "claims"
    assert refused(verifier, hs(good, secret="another-secret-" + "y" * 30)) == "invalid_token"
    assert refused(verifier, "not.a.token") == "invalid_token"
    # alg "none": an unsigned token naming itself valid
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps(good).encode()).rstrip(b"=").decode()
    assert refused(verifier, f"{header}.{payload}.") in ("algorithm", "invalid_token")
    # a tampered payload under the original signature
    token = hs(good)
    head, _, sig = token.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({**good, "sub": "root"}).encode()).rstrip(b"=").decode()
    assert refused(verifier, f"{head}.{forged}.{sig}") == "invalid_token"
    # inside the leeway an expired token still passes: clocks differ a little
    assert verifier.verify(hs({**good, "exp": now() - 2})).subject == "jwt:u"


def test_an_rsa_public_key_is_not_usable_as_an_hmac_secret(tmp_path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(public_pem)
    verifier = TokenVerifier(ApiSettings(jwt_public_key=str(key_file)))
    claims = {"sub": "u", "scope": "admin", "exp": now() + 60}
    assert verifier.verify(jwt.encode(claims, private, algorithm="RS256")).scopes == {"admin"}
    # The classic confusion attack: sign HS256 with the public key's text as the secret.
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    signature = base64.urlsafe_b64encode(hmac.new(public_pem, header + b"." + payload, hashlib.sha256).digest()).rstrip(b"=")
    forged = (header + b"." + payload + b"." + signature).decode()
    assert refused(verifier, forged) in ("algorithm", "invalid_token")


def test_an_ec_key_accepts_es256_only() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    verifier = TokenVerifier(ApiSettings(jwt_public_key=pem))
    assert verifier.algorithms == ["ES256", "ES384"]
    assert verifier.verify(jwt.encode({"sub": "e", "exp": now() + 60}, private, algorithm="ES256")).subject == "jwt:e"


def test_without_a_jwt_setting_bearer_tokens_are_refused() -> None:
    verifier = TokenVerifier(ApiSettings())
    assert not verifier.enabled and refused(verifier, hs({"sub": "u", "exp": now() + 60})) == "jwt_disabled"


def test_settings_refuse_weak_or_unsafe_values() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        ApiSettings(jwt_secret="short")
    with pytest.raises(ValueError, match="'\\*' is refused"):
        ApiSettings(api_cors_origins="*")
    with pytest.raises(ValueError, match="not an address or a CIDR"):
        ApiSettings(api_trusted_proxies="10.0.0.0/33")
    with pytest.raises(ValueError, match="not a limit"):
        ApiSettings(api_rate_limits="ten/minute")
    with pytest.raises(ValueError, match="not accepted"):
        ApiSettings(jwt_algorithms="none")
    with pytest.raises(ConfigurationError, match="CITADEL_JWT_SECRET"):
        mint_token(ApiSettings(), "u", ["admin"], 60)


def test_scopes_and_ttls_are_checked() -> None:
    assert parse_scopes("search, metrics,search") == ["metrics", "search"]
    with pytest.raises(ConfigurationError, match="unknown scope 'everything'"):
        parse_scopes("everything")
    assert parse_ttl("1h") == 3600 and parse_ttl("90") == 90 and parse_ttl("7d") == 7 * 86400
    with pytest.raises(ConfigurationError, match="--ttl"):
        parse_ttl("soon")


async def test_keys_are_stored_as_hashes_and_revocation_is_immediate(registry_backend: str) -> None:
    registry = Registry(Settings().registry_url)
    await registry.init()
    try:
        keys = ApiKeys(registry)
        created = await keys.create("ci", ["search"])
        assert created.key.startswith(f"ctd_{created.key_id}_")
        async with registry.engine.connect() as conn:
            rows = (await conn.execute(sa.select(api_keys).where(api_keys.c.key_id == created.key_id))).all()
            everything = " ".join(str(value) for row in (await conn.execute(sa.select(api_keys))).all() for value in row)
        assert rows[0].key_hash == hash_key(created.key) and created.key not in everything
        identity = await keys.authenticate(created.key)
        assert identity.subject == f"key:{created.key_id}" and identity.scopes == {"search"}
        listed = await keys.list()
        assert [k.last_used_at is not None for k in listed if k.key_id == created.key_id] == [True]
        await keys.revoke(created.key_id)
        with pytest.raises(AuthError) as caught:
            await keys.authenticate(created.key)  # read from the registry on every request: refused at once
        assert caught.value.reason == "revoked_key"
        with pytest.raises(AuthError):
            await keys.authenticate(created.key[:-1] + ("A" if created.key[-1] != "A" else "B"))
        with pytest.raises(ConfigurationError, match="no API key"):
            await keys.revoke("missing")
        with pytest.raises(ConfigurationError, match="name"):
            await keys.create("  ", ["search"])
    finally:
        await registry.aclose()


async def test_keys_expire_rotate_with_their_grants_and_every_change_is_audited(registry_backend: str) -> None:
    import datetime as dt

    from citadel.apikeys import Actor
    from citadel.audit import AuditLog
    from citadel.registry import audit, utcnow

    registry = Registry(Settings().registry_url)
    await registry.init()
    try:
        keys, trail = ApiKeys(registry), AuditLog(registry)
        since = utcnow() - dt.timedelta(seconds=1)
        ops = Actor("cli:ops", "10.0.0.9")
        created = await keys.create("team-a", ["search"], collections="team-a-*", sources=["/srv/a"], rate_limits="2/second",
                                    expires_in_s=3600, actor=ops)
        identity = await keys.authenticate(created.key)
        assert identity.reaches("team-a-docs") and not identity.reaches("team-b-docs")
        assert identity.grants.sources == ("/srv/a",) and identity.rate_limits == "2/second"
        assert created.expires_at is not None and created.expires_at > utcnow() + dt.timedelta(minutes=59)

        later, old = await keys.rotate(created.key_id, 600, actor=ops)
        assert (later.collections, later.sources, later.rate_limits) == (["team-a-*"], ["/srv/a"], "2/second")
        assert later.expires_at is not None and later.expires_at > utcnow() + dt.timedelta(minutes=59)
        assert old.replaced_by == later.key_id and old.expires_at is not None and old.expires_at <= utcnow() + dt.timedelta(seconds=601)
        assert (await keys.authenticate(created.key)).subject == f"key:{created.key_id}"  # within its grace
        with pytest.raises(ConfigurationError, match="already rotated"):
            await keys.rotate(created.key_id, 0)
        final, _ = await keys.rotate(later.key_id, 0, actor=ops)
        with pytest.raises(AuthError) as caught:
            await keys.authenticate(later.key)  # no grace: refused at once
        assert caught.value.reason == "revoked_key"
        short = await keys.create("short", ["search"], expires_in_s=1)
        async with registry.engine.begin() as conn:  # its hour has come
            await conn.execute(api_keys.update().where(api_keys.c.key_id == short.key_id).values(expires_at=utcnow()))
        with pytest.raises(AuthError) as caught:
            await keys.authenticate(short.key)
        assert caught.value.reason == "expired_key"
        assert not (await keys.authenticate(final.key)).grants.reaches("team-b-docs")

        lines = [line for line in await trail.read(since=since) if line.actor == "cli:ops"]
        assert [line.action for line in lines] == ["key.created", "key.created", "key.rotated", "key.created", "key.rotated"]
        assert all(line.address == "10.0.0.9" for line in lines)
        text = " ".join(line.model_dump_json() for line in await trail.read())
        assert created.key not in text and later.key not in text and final.key not in text
        async with registry.engine.begin() as conn:  # append-only on Postgres too: an update or delete changes nothing
            await conn.execute(audit.update().values(outcome="forged"))
            await conn.execute(audit.delete())
        assert len(await trail.read()) >= len(lines) and all(line.outcome != "forged" for line in await trail.read())
    except sa.exc.DatabaseError as exc:
        assert registry_backend == "sqlite" and "append-only" in str(exc)
    finally:
        await registry.aclose()
