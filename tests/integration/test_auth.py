"""AuthService over a real gRPC channel against MariaDB."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter

import grpc
import jwt
import pytest

from core.auth import Role, TokenCodec, check_secret
from core.passwords import PasswordHasher
from core.settings import AuthSettings, Settings
from core.throttle import account_key
from gen.jobmesh.v1 import auth_pb2
from scheduler_svc.main import SchedulerApp
from tests.support.polling import wait_for
from tests.support.rpc import Client, expect_code, field_violations
from tests.support.scheduler import InProcessScheduler
from tests.support.services import make_settings

PASSWORD = "correct horse battery"
NEW_PASSWORD = "battery staple horse"


async def test_sign_up_login_and_current_user(scheduler: InProcessScheduler) -> None:
    auth = scheduler.anon.auth
    up = await auth.SignUp(auth_pb2.SignUpRequest(username="ada", email="Ada@Example.com", password=PASSWORD))
    assert up.token == up.access_token and up.refresh_token and up.user_id
    assert up.email == "ada@example.com" and up.role == auth_pb2.ROLE_USER and up.expires_in == 3600
    login = await auth.Login(auth_pb2.LoginRequest(email="ADA@example.com", password=PASSWORD))
    assert login.user_id == up.user_id
    me = await auth.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {login.access_token}"),)
    )
    assert (me.username, me.email, me.role) == ("ada", "ada@example.com", auth_pb2.ROLE_USER)


async def test_sign_up_validation_and_duplicates(scheduler: InProcessScheduler) -> None:
    auth = scheduler.anon.auth
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


async def test_login_does_not_reveal_whether_the_email_exists(scheduler: InProcessScheduler) -> None:
    auth = scheduler.anon.auth
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


@pytest.fixture
def settings(mysql_url: str, request: pytest.FixtureRequest) -> Settings:
    """The usual test settings; a test may override some (indirect parametrization)."""
    return make_settings(mysql_url, **getattr(request, "param", {}))


# Delays long enough that no attempt waits them out while a test runs.
LONG_DELAYS = pytest.mark.parametrize(
    "settings", [{"auth__login_delay_seconds": 300.0}], indirect=True, ids=["long-delays"]
)
Answer = tuple[str, str]
THROTTLED_900 = "too many failed logins; try again in 900 s"


async def attempt(scheduler: InProcessScheduler, email: str, password: str, address: str = "") -> Answer:
    """A login's answer as (status name, message); ``address`` is the client the
    test's connection (from loopback, a trusted proxy by default) forwards for."""
    metadata = (("x-forwarded-for", address),) if address else ()
    try:
        await scheduler.anon.auth.Login(auth_pb2.LoginRequest(email=email, password=password), metadata=metadata)
    except grpc.aio.AioRpcError as err:
        return err.code().name, err.details() or ""
    return "OK", ""


async def sign_up(scheduler: InProcessScheduler, name: str) -> auth_pb2.SignUpResponse:
    response: auth_pb2.SignUpResponse = await scheduler.anon.auth.SignUp(
        auth_pb2.SignUpRequest(username=name, email=f"{name}@example.com", password=PASSWORD)
    )
    return response


@LONG_DELAYS
async def test_parallel_guesses_are_each_counted_and_only_the_free_ones_checked(scheduler: InProcessScheduler) -> None:
    email, attacker, owner = "grace@example.com", "198.51.100.7", "203.0.113.9"
    await sign_up(scheduler, "grace")
    guesses = await asyncio.gather(*(attempt(scheduler, email, f"wrong password {i}", attacker) for i in range(50)))
    # Each guess is charged before its check: all 50 count, and only the 5 free ones
    # were checked (a checked wrong password answers UNAUTHENTICATED).
    assert Counter(code for code, _ in guesses) == {"UNAUTHENTICATED": 5, "RESOURCE_EXHAUSTED": 45}
    assert await scheduler.app.login_attempts.failures(account_key(email), attacker) == 50
    # Throttled, the right password among parallel guesses is refused unchecked like the rest.
    batch = [PASSWORD if i == 7 else f"wrong password {i}" for i in range(10)]
    answers = await asyncio.gather(*(attempt(scheduler, email, password, attacker) for password in batch))
    assert {code for code, _ in answers} == {"RESOURCE_EXHAUSTED"}
    assert await scheduler.app.login_attempts.failures(account_key(email), attacker) == 60
    # The owner, at another address, is not affected: neither forwarded for nor as the peer itself.
    assert await attempt(scheduler, email, PASSWORD, owner) == ("OK", "")
    assert await attempt(scheduler, email, PASSWORD) == ("OK", "")
    assert await attempt(scheduler, email, PASSWORD, attacker) == answers[7] == ("RESOURCE_EXHAUSTED", THROTTLED_900)


@pytest.mark.parametrize(
    "settings",
    [{"auth__login_delay_seconds": 300.0, "auth__trusted_proxies": "192.0.2.1"}],
    indirect=True,
    ids=["loopback-untrusted"],
)
async def test_an_untrusted_peer_cannot_pose_as_other_clients(scheduler: InProcessScheduler) -> None:
    await sign_up(scheduler, "heidi")
    answers = [await attempt(scheduler, "heidi@example.com", "wrong password", f"203.0.113.{i}") for i in range(7)]
    assert [code for code, _ in answers] == ["UNAUTHENTICATED"] * 5 + ["RESOURCE_EXHAUSTED"] * 2
    assert await scheduler.app.login_attempts.failures(account_key("heidi@example.com"), "127.0.0.1") == 7


@LONG_DELAYS
async def test_unknown_existing_and_disabled_emails_are_answered_alike(scheduler: InProcessScheduler) -> None:
    admin = await scheduler.user("ADMIN")
    await sign_up(scheduler, "ivan")
    judy = await sign_up(scheduler, "judy")
    await admin.auth.SetUserDisabled(
        auth_pb2.SetUserDisabledRequest(user_id=judy.user_id, disabled=True), metadata=admin.md
    )
    emails = ["ivan@example.com", "nobody@example.com", "judy@example.com"]
    rounds = [
        [await attempt(scheduler, email, "wrong password", "198.51.100.20") for email in emails] for _ in range(8)
    ]
    for answers in rounds:
        assert len(set(answers)) == 1, answers
    assert [answers[0][0] for answers in rounds] == ["UNAUTHENTICATED"] * 5 + ["RESOURCE_EXHAUSTED"] * 3
    assert rounds[0][0] == ("UNAUTHENTICATED", "invalid email or password")
    assert rounds[5][0] == ("RESOURCE_EXHAUSTED", "too many failed logins; try again in 600 s")
    assert rounds[6][0] == ("RESOURCE_EXHAUSTED", THROTTLED_900)
    burst = await asyncio.gather(
        *(attempt(scheduler, email, "wrong password", "198.51.100.21") for email in emails for _ in range(10))
    )
    per_email = [Counter(burst[i * 10 : (i + 1) * 10]) for i in range(len(emails))]
    assert per_email[0] == per_email[1] == per_email[2], per_email


async def test_throttling_delays_and_never_locks(scheduler: InProcessScheduler) -> None:
    email = "kate@example.com"
    await sign_up(scheduler, "kate")
    for _ in range(5):
        assert (await attempt(scheduler, email, "wrong password"))[0] == "UNAUTHENTICATED"
    # The 6th is refused, counted, and told the 7th's delay.
    assert await attempt(scheduler, email, PASSWORD) == (
        "RESOURCE_EXHAUSTED",
        "too many failed logins; try again in 2 s",
    )
    await asyncio.sleep(2)  # the delay itself is the behaviour under test
    assert await attempt(scheduler, email, PASSWORD) == ("OK", "")
    # The right password cleared the count: free attempts again.
    assert (await attempt(scheduler, email, "wrong password"))[0] == "UNAUTHENTICATED"


async def test_a_demoted_admin_loses_her_powers_on_her_next_request(scheduler: InProcessScheduler) -> None:
    root = await scheduler.user("ADMIN")
    up = await sign_up(scheduler, "mallory")
    await root.auth.SetUserRole(
        auth_pb2.SetUserRoleRequest(user_id=up.user_id, role=auth_pb2.ROLE_ADMIN), metadata=root.md
    )
    login = await scheduler.anon.auth.Login(auth_pb2.LoginRequest(email="mallory@example.com", password=PASSWORD))
    her = scheduler.anon.as_user(login.access_token, login.user_id)
    # Another scheduler instance on the same database, which learns of changes only by reading.
    other_app = SchedulerApp(scheduler.app.settings)
    other_port = await other_app.start(loops=False)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{other_port}") as channel:
            her_elsewhere = Client(channel, login.access_token, login.user_id)
            await her.auth.ListUsers(auth_pb2.ListUsersRequest(), metadata=her.md)
            await her_elsewhere.auth.ListUsers(auth_pb2.ListUsersRequest(), metadata=her.md)
            await root.auth.SetUserRole(
                auth_pb2.SetUserRoleRequest(user_id=her.user_id, role=auth_pb2.ROLE_VIEWER), metadata=root.md
            )
            # The very next request, with the same (admin) token.
            await expect_code(
                her.auth.ListUsers(auth_pb2.ListUsersRequest(), metadata=her.md), grpc.StatusCode.PERMISSION_DENIED
            )
            await expect_code(
                her.auth.SetUserRole(
                    auth_pb2.SetUserRoleRequest(user_id=root.user_id, role=auth_pb2.ROLE_VIEWER), metadata=her.md
                ),
                grpc.StatusCode.PERMISSION_DENIED,
            )
            me = await her.auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=her.md)
            assert me.role == auth_pb2.ROLE_VIEWER
            await expect_code(
                her.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=login.refresh_token)),
                grpc.StatusCode.UNAUTHENTICATED,
            )

            async def denied_elsewhere() -> bool:
                try:
                    await her_elsewhere.auth.ListUsers(auth_pb2.ListUsersRequest(), metadata=her.md)
                except grpc.aio.AioRpcError as err:
                    return bool(err.code() == grpc.StatusCode.PERMISSION_DENIED)
                return False

            # The other instance remembers states for at most a second.
            await wait_for(denied_elsewhere, timeout=5.0)
    finally:
        await other_app.stop()


async def test_a_password_change_ends_every_session(scheduler: InProcessScheduler) -> None:
    first = await sign_up(scheduler, "nina")
    second = await scheduler.anon.auth.Login(auth_pb2.LoginRequest(email="nina@example.com", password=PASSWORD))
    md = (("authorization", f"Bearer {second.access_token}"),)
    err = await expect_code(
        scheduler.anon.auth.ChangePassword(
            auth_pb2.ChangePasswordRequest(current_password="not my password", new_password=NEW_PASSWORD), metadata=md
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_violations(err)) == {"current_password"}
    err = await expect_code(
        scheduler.anon.auth.ChangePassword(
            auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password="short"), metadata=md
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_violations(err)) == {"new_password"}
    changed = await scheduler.anon.auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD), metadata=md
    )
    assert changed.access_token and changed.user_id == first.user_id
    for old in (first, second):
        await expect_code(
            scheduler.anon.auth.GetCurrentUser(
                auth_pb2.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {old.access_token}"),)
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        await expect_code(
            scheduler.anon.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=old.refresh_token)),
            grpc.StatusCode.UNAUTHENTICATED,
        )
    await scheduler.anon.auth.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {changed.access_token}"),)
    )
    await scheduler.anon.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=changed.refresh_token))
    assert (await attempt(scheduler, "nina@example.com", PASSWORD))[0] == "UNAUTHENTICATED"
    assert await attempt(scheduler, "nina@example.com", NEW_PASSWORD) == ("OK", "")


async def test_a_disabled_account_is_shut_out_at_once(scheduler: InProcessScheduler) -> None:
    root = await scheduler.user("ADMIN")
    bystander = await scheduler.user()
    olga = await sign_up(scheduler, "olga")
    olga_md = (("authorization", f"Bearer {olga.access_token}"),)
    await scheduler.anon.auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=olga_md)
    await expect_code(
        bystander.auth.SetUserDisabled(
            auth_pb2.SetUserDisabledRequest(user_id=olga.user_id, disabled=True), metadata=bystander.md
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_code(
        root.auth.SetUserDisabled(
            auth_pb2.SetUserDisabledRequest(user_id=root.user_id, disabled=True), metadata=root.md
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    disabled = await root.auth.SetUserDisabled(
        auth_pb2.SetUserDisabledRequest(user_id=olga.user_id, disabled=True), metadata=root.md
    )
    assert disabled.disabled
    await expect_code(
        scheduler.anon.auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=olga_md),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await expect_code(
        scheduler.anon.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=olga.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert await attempt(scheduler, "olga@example.com", PASSWORD) == ("UNAUTHENTICATED", "invalid email or password")
    listed = await root.auth.ListUsers(auth_pb2.ListUsersRequest(), metadata=root.md)
    assert {u.id: u.disabled for u in listed.users}[olga.user_id]
    await root.auth.SetUserDisabled(
        auth_pb2.SetUserDisabledRequest(user_id=olga.user_id, disabled=False), metadata=root.md
    )
    assert await attempt(scheduler, "olga@example.com", PASSWORD) == ("OK", "")
    # Enabling does not bring the ended sessions back.
    await expect_code(
        scheduler.anon.auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=olga_md),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_password_checks_leave_the_event_loop_free(scheduler: InProcessScheduler) -> None:
    """The scheduler runs in this test's event loop: a ticker in it keeps ticking
    while logins are checked. Were the checks on the loop, it would stall for about
    the sum of their durations."""
    logins = 16
    hasher = PasswordHasher()
    stored = hasher.hash("calibration")
    started = time.perf_counter()
    hasher.verify(stored, "wrong")  # one check, on this thread
    one_check = time.perf_counter() - started
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    # A first round opens the database connections and warms the statement caches.
    await asyncio.gather(*(attempt(scheduler, f"warm-{i}@example.com", "wrong password") for i in range(logins)))
    ticking = asyncio.create_task(ticker())
    answers = await asyncio.gather(
        *(attempt(scheduler, f"nobody-{i}@example.com", "wrong password") for i in range(logins))
    )
    done.set()
    await ticking
    assert {code for code, _ in answers} == {"UNAUTHENTICATED"}
    # A stall is a gap in which a check could have run on the loop: half a check or more.
    stalled = sum(gap for gap in gaps if gap >= one_check / 2)
    assert stalled < logins * one_check / 4, (stalled, one_check, max(gaps))


async def test_refresh_rotates_and_reuse_revokes_the_chain(scheduler: InProcessScheduler) -> None:
    auth = scheduler.anon.auth
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


async def test_admin_only_user_management(scheduler: InProcessScheduler) -> None:
    admin = await scheduler.user("ADMIN")
    user = await scheduler.user()
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


async def test_first_admin_from_settings_is_idempotent(scheduler: InProcessScheduler) -> None:
    accounts = scheduler.app.accounts
    await accounts.ensure_admin("root@example.com", PASSWORD)
    await accounts.ensure_admin("root@example.com", PASSWORD)
    login = await scheduler.anon.auth.Login(auth_pb2.LoginRequest(email="root@example.com", password=PASSWORD))
    assert login.role == auth_pb2.ROLE_ADMIN
    users, _ = await scheduler.app.users.list(10, 0)
    assert [u.email for u in users].count("root@example.com") == 1


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_jwt_attacks_are_unauthenticated(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    settings = scheduler.app.settings.auth
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
            scheduler.anon.auth.GetCurrentUser(
                auth_pb2.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {token}"),)
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, name
    await expect_code(
        scheduler.anon.auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest()), grpc.StatusCode.UNAUTHENTICATED
    )
    await expect_code(
        scheduler.anon.auth.GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(), metadata=(("authorization", "Basic abc"),)
        ),
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
