"""Where ``jobmesh login`` keeps its tokens: ``<config dir>/jobmesh/credentials.json``,
readable by its owner only (0600, in a 0700 directory), one entry per server."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from core.domain import Session

FILE_NAME = "credentials.json"


def config_dir(environ: Mapping[str, str]) -> Path:
    """``$JOBMESH_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/jobmesh``, else ``~/.config/jobmesh``."""
    if environ.get("JOBMESH_CONFIG_DIR"):
        return Path(environ["JOBMESH_CONFIG_DIR"])
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "jobmesh"


@dataclass(frozen=True)
class Credentials:
    access_token: str
    refresh_token: str
    user_id: str = ""
    email: str = ""
    role: str = ""

    @classmethod
    def of(cls, session: Session) -> Credentials:
        user = session.user
        return cls(session.access_token, session.refresh_token, user.id, user.email, str(user.role))


class CredentialStore:
    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        servers = data.get("servers") if isinstance(data, dict) else None
        return servers if isinstance(servers, dict) else {}

    def load(self, server: str) -> Credentials | None:
        entry = self._read().get(server)
        if not isinstance(entry, dict):
            return None
        try:
            return Credentials(**entry)
        except TypeError:
            return None

    def save(self, server: str, credentials: Credentials) -> None:
        servers = self._read()
        servers[server] = asdict(credentials)
        self._write(servers)

    def forget(self, server: str) -> bool:
        servers = self._read()
        if servers.pop(server, None) is None:
            return False
        self._write(servers)
        return True

    def _write(self, servers: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{FILE_NAME}.{os.getpid()}")
        # Created 0600 from the start (never readable by others, whatever the umask),
        # then moved over the old file in one step.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, json.dumps({"servers": servers}, indent=2).encode())
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
