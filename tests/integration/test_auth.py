"""AuthService over a real gRPC channel against MariaDB."""

from __future__ import annotations

import base64
import json
import time

import grpc
import jwt
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from core.auth import Role, TokenCodec, check_secret
from core.settings import AuthSettings
from gen.jobmesh.v1 import auth_pb2
from tests.conftest import Mesh

PASSWORD = "correct horse battery"


def field_violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    out: dict[str, str] = {}
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.update({v.field: v.description for v in bad.field_violations})
    return out


async def expect_code(call: object, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    return info.value


async def test_sign_up_login_and_current_user(mesh: Mesh) -> None:
    auth = mesh.anon.auth
    up = await auth.SignUp(auth_pb2.SignUpRequest(username="ada", email="Ada@Example.com", password=PASSWORD))
    assert up.token == up.access_token and up.refresh_token and up.user_id
    assert up.email == "ada@example.com" and up.role == auth_pb2.ROLE_USER and up.expires_in == 3600
    login = await auth.Login(auth_pb2.LoginRequest(email="ADA@example.com", password=PASSWORD))
    assert login.user_id == up.user_id
    me = await auth.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {login.access_token}"),)
    )
    assert (me.username, me.email, me.role) == ("ada", "ada@example.com", auth_pb2.ROLE_USER)


async def test_sign_up_validation_and_duplicates(mesh: Mesh) -> None:
    auth = mesh.anon.auth
    err = await expect_code(
        auth.SignUp(auth_pb2.SignUpRequest(username="x", email="not-an-email", password="short")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_violations(err)) == {"username", "email", "password"}
    await expect_code(
        auth.SignUp(auth_pb2.SignUpRequest(username="longpw", email="l@example.com", password="x" * 129)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await auth.SignUp(auth_pb2.SignUpRequest(username="bob", email="bob@example.com", password=PASSWORD))
    await expect_code(
        auth.SignUp(auth_pb2.SignUpRequest(username="bob2", email="BOB@example.com", password=PASSWORD)),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    await expect_code(
        auth.SignUp(auth_pb2.SignUpRequest(username="bob", email="bob2@example.com", password=PASSWORD)),
        grpc.StatusCode.ALREADY_EXISTS,
    )


async def test_login_does_not_reveal_whether_the_email_exists(mesh: Mesh) -> None:
    auth = mesh.anon.auth
    await auth.SignUp(auth_pb2.SignUpRequest(username="carol", email="carol@example.com", password=PASSWORD))
    wrong = await expect_code(
        auth.Login(auth_pb2.LoginRequest(email="carol@example.com", password="wrong password")),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    unknown = await expect_code(
        auth.Login(auth_pb2.LoginRequest(email="nobody@example.com", password="wrong password")),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert wrong.details() == unknown.details()


async def test_login_throttling_locks_after_five_failures(mesh: Mesh) -> None:
    auth = mesh.anon.auth
    await auth.SignUp(auth_pb2.SignUpRequest(username="dave", email="dave@example.com", password=PASSWORD))
    for _ in range(5):
        await expect_code(
            auth.Login(auth_pb2.LoginRequest(email="dave@example.com", password="bad password")),
            grpc.StatusCode.UNAUTHENTICATED,
        )
    # Locked now: even the right password is refused until the lock expires.
    await expect_code(
        auth.Login(auth_pb2.LoginRequest(email="dave@example.com", password=PASSWORD)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    user = await mesh.app.accounts._users.by_email("dave@example.com")
    assert user is not None and user.locked_until is not None
    await mesh.app.accounts._users.record_failure(user.id, 5, None)  # as if the 30 s lock had passed
    await auth.Login(auth_pb2.LoginRequest(email="dave@example.com", password=PASSWORD))


async def test_refresh_rotates_and_reuse_revokes_the_chain(mesh: Mesh) -> None:
    auth = mesh.anon.auth
    up = await auth.SignUp(auth_pb2.SignUpRequest(username="erin", email="erin@example.com", password=PASSWORD))
    first = await auth.Refresh(auth_pb2.RefreshRequest(refresh_token=up.refresh_token))
    assert first.refresh_token != up.refresh_token and first.access_token
    # The spent token presented again: refused, and the chain it belongs to dies with it.
    await expect_code(
        auth.Refresh(auth_pb2.RefreshRequest(refresh_token=up.refresh_token)), grpc.StatusCode.UNAUTHENTICATED
    )
    await expect_code(
        auth.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token)), grpc.StatusCode.UNAUTHENTICATED
    )
    await expect_code(auth.Refresh(auth_pb2.RefreshRequest(refresh_token="")), grpc.StatusCode.INVALID_ARGUMENT)


async def test_admin_only_user_management(mesh: Mesh) -> None:
    admin = await mesh.user("ADMIN")
    user = await mesh.user()
    listed = await admin.auth.ListUsers(auth_pb2.ListUsersRequest(page_size=1), metadata=admin.md)
    assert len(listed.users) == 1 and listed.next_page_token
    rest = await admin.auth.ListUsers(
        auth_pb2.ListUsersRequest(page_size=10, page_token=listed.next_page_token), metadata=admin.md
    )
    assert {u.id for u in rest.users} | {listed.users[0].id} == {admin.user_id, user.user_id}
    await expect_code(
        user.auth.ListUsers(auth_pb2.ListUsersRequest(), metadata=user.md), grpc.StatusCode.PERMISSION_DENIED
    )
    await expect_code(
        user.auth.SetUserRole(
            auth_pb2.SetUserRoleRequest(user_id=user.user_id, role=auth_pb2.ROLE_ADMIN), metadata=user.md
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    changed = await admin.auth.SetUserRole(
        auth_pb2.SetUserRoleRequest(user_id=user.user_id, role=auth_pb2.ROLE_VIEWER), metadata=admin.md
    )
    assert changed.role == auth_pb2.ROLE_VIEWER
    await expect_code(
        admin.auth.SetUserRole(auth_pb2.SetUserRoleRequest(user_id=user.user_id), metadata=admin.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await expect_code(
        admin.auth.SetUserRole(
            auth_pb2.SetUserRoleRequest(user_id="00000000-0000-7000-8000-000000000000", role=auth_pb2.ROLE_USER),
            metadata=admin.md,
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_first_admin_from_settings_is_idempotent(mesh: Mesh) -> None:
    accounts = mesh.app.accounts
    await accounts.ensure_admin("root@example.com", PASSWORD)
    await accounts.ensure_admin("root@example.com", PASSWORD)
    login = await mesh.anon.auth.Login(auth_pb2.LoginRequest(email="root@example.com", password=PASSWORD))
    assert login.role == auth_pb2.ROLE_ADMIN
    users, _ = await accounts._users.list(10, 0)
    assert [u.email for u in users].count("root@example.com") == 1


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_jwt_attacks_are_unauthenticated(mesh: Mesh) -> None:
    user = await mesh.user()
    settings = mesh.app.settings.auth
    now = int(time.time())
    good = {"sub": user.user_id, "role": "ADMIN", "iat": now, "exp": now + 600, "iss": settings.jwt_issuer,
            "aud": settings.jwt_audience}  # fmt: skip
    secret = settings.jwt_secret
    header, _, signature = user.token.split(".")
    tampered_payload = _b64({**jwt.decode(user.token, options={"verify_signature": False}), "role": "ADMIN"})
    bad_tokens = {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(good)}.",
        "wrong secret": jwt.encode(good, "another-secret-of-sufficient-length!!", algorithm="HS256"),
        "expired": jwt.encode({**good, "iat": now - 7200, "exp": now - 3600}, secret, algorithm="HS256"),
        "wrong audience": jwt.encode({**good, "aud": "someone-else"}, secret, algorithm="HS256"),
        "wrong issuer": jwt.encode({**good, "iss": "evil"}, secret, algorithm="HS256"),
        "tampered payload": f"{header}.{tampered_payload}.{signature}",
        "missing claims": jwt.encode({"sub": user.user_id, "role": "USER"}, secret, algorithm="HS256"),
        "unknown role": jwt.encode({**good, "role": "ROOT"}, secret, algorithm="HS256"),
        "garbage": "not.a.jwt",
    }
    for name, token in bad_tokens.items():
        err = await expect_code(
            mesh.anon.auth.GetCurrentUser(
                auth_pb2.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {token}"),)
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, name
    await expect_code(mesh.anon.auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest()), grpc.StatusCode.UNAUTHENTICATED)
    await expect_code(
        mesh.anon.auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=(("authorization", "Basic abc"),)),
        grpc.StatusCode.UNAUTHENTICATED,
    )


def test_token_codec_leeway_and_claims() -> None:
    codec = TokenCodec(AuthSettings(jwt_secret="s" * 40))
    token = codec.issue("u1", Role.VIEWER, now=time.time() - 3600 - 20)  # expired 20 s ago: within the 30 s leeway
    assert codec.verify(token).role is Role.VIEWER


def test_production_refuses_weak_secrets() -> None:
    with pytest.raises(SystemExit):
        check_secret(AuthSettings(production=True))
    with pytest.raises(SystemExit):
        check_secret(AuthSettings(production=True, jwt_secret="short"))
    check_secret(AuthSettings(production=True, jwt_secret="z" * 32))
    check_secret(AuthSettings())
