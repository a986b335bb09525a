"""An in-process scheduler_svc on an ephemeral port, and users signed up on it."""

from __future__ import annotations

import uuid

import grpc

from core.auth import Role
from gen.jobmesh.v1 import auth_pb2
from scheduler_svc.main import SchedulerApp
from tests.support.rpc import Client

PASSWORD = "correct horse battery"


class InProcessScheduler:
    """A SchedulerApp in this process (no loops unless started) and a channel to it."""

    def __init__(self, app: SchedulerApp, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.channel = channel
        self.anon = Client(channel)
        self._signed_up = 0

    async def user(self, role: str = "USER") -> Client:
        """A new account, signed in; ``role`` other than USER is granted in the store."""
        self._signed_up += 1
        name = f"user{self._signed_up}-{uuid.uuid4().hex[:6]}"
        email = f"{name}@example.com"
        resp = await self.anon.auth.SignUp(auth_pb2.SignUpRequest(username=name, email=email, password=PASSWORD))
        if role != "USER":
            await self.app.users.set_role(resp.user_id, Role(role))
            resp = await self.anon.auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD))
        return Client(self.channel, resp.access_token, resp.user_id)
