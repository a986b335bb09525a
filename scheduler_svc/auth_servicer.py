"""AuthService: decode (core.convert) → scheduler_svc.accounts → encode (core.convert)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from core import convert
from core.auth import current_principal
from core.peers import Network, client_address, client_key, forwarded_for, grpc_peer_host
from core.rpc import ServiceSpec
from gen.jobmesh.v1 import auth_pb2, auth_pb2_grpc
from scheduler_svc.accounts import Accounts

PUBLIC_METHODS = (
    "/jobmesh.v1.AuthService/SignUp",
    "/jobmesh.v1.AuthService/Login",
    "/jobmesh.v1.AuthService/Refresh",
)


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, accounts: Accounts, trusted_proxies: Sequence[Network] = ()) -> None:
        self._accounts = accounts
        self._trusted = tuple(trusted_proxies)

    def spec(self) -> ServiceSpec:
        """This servicer as create_server registers it."""
        return auth_pb2_grpc.add_AuthServiceServicer_to_server, self, "jobmesh.v1.AuthService"

    def _client(self, context: grpc.aio.ServicerContext) -> str:
        """Whom throttling counts the call against: the peer, or the address a
        trusted proxy (the gateway) forwards for."""
        peer = grpc_peer_host(context.peer() or "")
        return client_key(client_address(peer, forwarded_for(context.invocation_metadata() or ()), self._trusted))

    async def SignUp(
        self, request: auth_pb2.SignUpRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.SignUpResponse:
        session = await self._accounts.sign_up(request.username, request.email, request.password)
        return convert.session_to_proto(session, auth_pb2.SignUpResponse)

    async def Login(self, request: auth_pb2.LoginRequest, context: grpc.aio.ServicerContext) -> auth_pb2.LoginResponse:
        session = await self._accounts.login(request.email, request.password, self._client(context))
        return convert.session_to_proto(session, auth_pb2.LoginResponse)

    async def Refresh(
        self, request: auth_pb2.RefreshRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RefreshResponse:
        session = await self._accounts.refresh(request.refresh_token)
        return convert.session_to_proto(session, auth_pb2.RefreshResponse)

    async def GetCurrentUser(
        self, request: auth_pb2.GetCurrentUserRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.User:
        return convert.user_to_proto(await self._accounts.current_user(current_principal()))

    async def ListUsers(
        self, request: auth_pb2.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListUsersResponse:
        page = await self._accounts.list_users(current_principal(), request.page_size, request.page_token)
        return convert.user_page_to_proto(page)

    async def SetUserRole(
        self, request: auth_pb2.SetUserRoleRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.User:
        role = convert.ROLES.from_proto(request.role, "role")
        return convert.user_to_proto(await self._accounts.set_role(current_principal(), request.user_id, role))

    async def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ChangePasswordResponse:
        session = await self._accounts.change_password(
            current_principal(), request.current_password, request.new_password, self._client(context)
        )
        return convert.session_to_proto(session, auth_pb2.ChangePasswordResponse)

    async def SetUserDisabled(
        self, request: auth_pb2.SetUserDisabledRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.User:
        user = await self._accounts.set_disabled(current_principal(), request.user_id, request.disabled)
        return convert.user_to_proto(user)
