"""AuthService: decode → scheduler_svc.accounts → encode."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from core import validation
from core.auth import Role, current_principal
from core.domain import enum_from_proto, enum_to_proto
from core.errors import Violations
from core.peers import Network, client_address, client_key, forwarded_for, grpc_peer_host
from db.repositories.paging import decode_token, encode_token
from gen.jobmesh.v1 import auth_pb2, auth_pb2_grpc
from scheduler_svc.accounts import Accounts, Session

PUBLIC_METHODS = (
    "/jobmesh.v1.AuthService/SignUp",
    "/jobmesh.v1.AuthService/Login",
    "/jobmesh.v1.AuthService/Refresh",
)


def _fields(session: Session) -> dict[str, Any]:
    return {
        "access_token": session.access_token,
        "token": session.access_token,
        "refresh_token": session.refresh_token,
        "user_id": session.user.id,
        "email": session.user.email,
        "role": enum_to_proto(session.user.role),
        "expires_in": session.expires_in,
        "username": session.user.username,
    }


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, accounts: Accounts, trusted_proxies: Sequence[Network] = ()) -> None:
        self._accounts = accounts
        self._trusted = tuple(trusted_proxies)

    def _client(self, context: grpc.aio.ServicerContext) -> str:
        """Whom throttling counts the call against: the peer, or the address a
        trusted proxy (the gateway) forwards for."""
        peer = grpc_peer_host(context.peer() or "")
        return client_key(client_address(peer, forwarded_for(context.invocation_metadata() or ()), self._trusted))

    async def SignUp(
        self, request: auth_pb2.SignUpRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.SignUpResponse:
        session = await self._accounts.sign_up(request.username, request.email, request.password)
        return auth_pb2.SignUpResponse(**_fields(session))

    async def Login(self, request: auth_pb2.LoginRequest, context: grpc.aio.ServicerContext) -> auth_pb2.LoginResponse:
        session = await self._accounts.login(request.email, request.password, self._client(context))
        return auth_pb2.LoginResponse(**_fields(session))

    async def Refresh(
        self, request: auth_pb2.RefreshRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RefreshResponse:
        session = await self._accounts.refresh(request.refresh_token)
        return auth_pb2.RefreshResponse(**_fields(session))

    async def GetCurrentUser(
        self, request: auth_pb2.GetCurrentUserRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.User:
        return (await self._accounts.current_user(current_principal())).to_proto()

    async def ListUsers(
        self, request: auth_pb2.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListUsersResponse:
        principal = current_principal()
        principal.require_admin()
        v = Violations()
        size = validation.check_page_size(v, request.page_size)
        v.raise_if_any()
        offset = decode_token(request.page_token, "users")
        users, total = await self._accounts.list_users(principal, size, offset)
        more = offset + len(users) < total
        return auth_pb2.ListUsersResponse(
            users=[u.to_proto() for u in users],
            next_page_token=encode_token(offset + len(users), "users") if more else "",
        )

    async def SetUserRole(
        self, request: auth_pb2.SetUserRoleRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.User:
        role = enum_from_proto(Role, request.role)
        user = await self._accounts.set_role(current_principal(), request.user_id, role)
        return user.to_proto()

    async def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ChangePasswordResponse:
        session = await self._accounts.change_password(
            current_principal(), request.current_password, request.new_password, self._client(context)
        )
        return auth_pb2.ChangePasswordResponse(**_fields(session))

    async def SetUserDisabled(
        self, request: auth_pb2.SetUserDisabledRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.User:
        user = await self._accounts.set_disabled(current_principal(), request.user_id, request.disabled)
        return user.to_proto()
