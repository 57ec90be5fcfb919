"""Access tokens that must be refused, and external RS256 tokens that must be accepted."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from errors import Unauthorized
from server.security import tokens as tokens_module
from tests.conftest import TEST_JWT_SECRET, register_user
from tests.rest.conftest import AppClient


def _claims(user_id: str, **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": user_id,
        "iss": "parley",
        "aud": "parley",
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "jti": uuid.uuid4().hex,
        "role": "user",
        "name": "Tester",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any]) -> str:
    payload = {k: int(v.timestamp()) if isinstance(v, datetime) else v for k, v in claims.items()}
    header = _b64(orjson.dumps({"alg": "none", "typ": "JWT"}))
    return f"{header}.{_b64(orjson.dumps(payload))}."


async def _me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    client.cookies.clear()
    return await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})


BAD_TOKENS = {
    "expired": lambda uid: jwt.encode(
        _claims(
            uid,
            iat=datetime.now(UTC) - timedelta(hours=2),
            exp=datetime.now(UTC) - timedelta(hours=1),
        ),
        TEST_JWT_SECRET,
        algorithm="HS256",
    ),
    "forged signature": lambda uid: jwt.encode(
        _claims(uid), "another-secret-" + "y" * 40, algorithm="HS256"
    ),
    "alg none": lambda uid: _unsigned(_claims(uid)),
    "wrong audience": lambda uid: jwt.encode(
        _claims(uid, aud="someone-else"), TEST_JWT_SECRET, algorithm="HS256"
    ),
    "wrong issuer": lambda uid: jwt.encode(
        _claims(uid, iss="someone-else"), TEST_JWT_SECRET, algorithm="HS256"
    ),
    "missing jti": lambda uid: jwt.encode(
        _claims(uid, jti=None), TEST_JWT_SECRET, algorithm="HS256"
    ),
    "garbage": lambda uid: "not.a.token",
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_a_bad_access_token_is_refused_with_the_unauthorized_envelope(
    client: httpx.AsyncClient, kind: str
) -> None:
    user = await register_user(client)

    response = await _me(client, BAD_TOKENS[kind](user.id))

    assert response.status_code == 401
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "unauthorized"


async def test_a_well_formed_token_for_our_own_issuer_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    token = jwt.encode(_claims(user.id), TEST_JWT_SECRET, algorithm="HS256")

    assert (await _me(client, token)).status_code == 200


async def test_an_authorization_header_that_is_not_bearer_is_refused(
    client: httpx.AsyncClient,
) -> None:
    client.cookies.clear()

    response = await client.get("/v1/me", headers={"Authorization": "Basic dXNlcjpwdw=="})

    assert response.status_code == 401


async def test_an_rs256_token_is_refused_when_no_public_key_is_configured(
    client: httpx.AsyncClient,
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(_claims(str(uuid.uuid4())), key, algorithm="RS256")

    assert (await _me(client, token)).status_code == 401


async def test_an_external_rs256_token_is_accepted_and_creates_the_user_on_first_sight(
    client_with: AppClient,
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    external_id = str(uuid.uuid4())
    token = jwt.encode(_claims(external_id, name="Outsider"), key, algorithm="RS256")

    async with client_with(jwt_public_key=public_pem) as client:
        first = await _me(client, token)
        second = await _me(client, token)
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = await _me(client, jwt.encode(_claims(external_id), other_key, algorithm="RS256"))

    assert first.status_code == 200, first.text
    # The local row has an id of its own, mapped from (issuer, subject).
    assert uuid.UUID(first.json()["data"]["id"])
    assert first.json()["data"]["name"] == "Outsider"
    assert second.json()["data"] == first.json()["data"]
    assert forged.status_code == 401


def _rsa_key() -> tuple[Any, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return key, public_pem


async def test_an_external_token_whose_subject_is_a_local_users_id_is_not_that_user(
    client_with: AppClient,
) -> None:
    key, public_pem = _rsa_key()
    async with client_with(jwt_public_key=public_pem) as client:
        local = await register_user(client, "Local")
        token = jwt.encode(_claims(local.id, name="Impostor"), key, algorithm="RS256")

        response = await _me(client, token)
        again = await _me(client, token)

    assert response.status_code == 200, response.text
    assert response.json()["data"]["id"] != local.id
    assert response.json()["data"]["email"] != local.email
    assert again.json()["data"]["id"] == response.json()["data"]["id"]


async def test_logout_all_revokes_an_external_users_earlier_tokens(
    client_with: AppClient,
) -> None:
    key, public_pem = _rsa_key()
    subject = f"ext-{uuid.uuid4().hex}"  # a subject need not be a UUID
    earlier = datetime.now(UTC) - timedelta(seconds=5)
    token = jwt.encode(_claims(subject, iat=earlier), key, algorithm="RS256")
    async with client_with(jwt_public_key=public_pem) as client:
        assert (await _me(client, token)).status_code == 200
        logout = await client.post(
            "/v1/auth/logout-all", headers={"Authorization": f"Bearer {token}"}
        )
        assert logout.status_code == 200, logout.text

        after = await _me(client, token)

    assert after.status_code == 401


async def test_a_token_is_verified_once_and_refused_once_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = tokens_module.TokenService(
        secret=TEST_JWT_SECRET, issuer="parley", audience="parley", access_ttl_s=60, leeway_s=5
    )
    token, _ = service.issue_access_token(uuid.uuid4(), role="user", name="Ada")
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        decoded.append(args[0])
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(tokens_module.jwt, "decode", counting_decode)
    first = await service.verify(token)
    again = await service.verify(token)
    assert again == first and decoded == [token]

    # Past its expiry and the leeway, for us and for PyJWT (which reads datetime.now).
    later = first.expires_at.timestamp() + 6

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Later:
            return cls.fromtimestamp(later, tz)

    monkeypatch.setattr(tokens_module.time, "time", lambda: later)
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)
    with pytest.raises(Unauthorized, match="expired"):
        await service.verify(token)
    assert decoded == [token, token]
