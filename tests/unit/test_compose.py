"""compose.yaml is validated structurally (there is no container engine here)."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from core.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[2]


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def test_services_and_health_checks() -> None:
    compose = load()
    services = compose["services"]
    assert {"mysql", "redis", "migrate", "scheduler", "worker", "monitor", "gateway"} <= set(services)
    assert services["mysql"]["image"].startswith("mysql:8")
    assert services["redis"]["image"].startswith("redis:7")
    for name in ("mysql", "redis"):
        assert "test" in services[name]["healthcheck"]
    for name in ("scheduler", "worker", "monitor", "gateway"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_commands_are_console_scripts() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    services = load()["services"]
    for name in ("migrate", "scheduler", "worker", "monitor", "gateway"):
        command = services[name]["command"]
        executable = command[0] if isinstance(command, list) else command.split()[0]
        assert executable in scripts, f"{name}: {executable} is not a console script"
    images = {services[n].get("build", {}).get("context", services[n].get("image")) for n in
              ("migrate", "scheduler", "worker", "monitor", "gateway")}  # fmt: skip
    assert len(images) == 1, "the four services and the migration share one image"


def test_ports_match_settings_defaults() -> None:
    defaults = ServerSettings.model_fields
    services = load()["services"]

    def ports(name: str) -> set[int]:
        return {int(str(p).split(":")[-1]) for p in services[name].get("ports", [])}

    assert defaults["scheduler_port"].default in ports("scheduler")
    assert defaults["gateway_port"].default in ports("gateway")
    assert {defaults["monitor_grpc_port"].default, defaults["monitor_http_port"].default} <= ports("monitor")


def interpolated(value: str) -> str:
    """``value`` as compose reads it with none of the variables set: ${NAME:-default} -> default."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def test_worker_can_build_its_sandbox() -> None:
    services = load()["services"]
    worker = services["worker"]
    assert worker["user"] in ("0:0", "root"), "namespaces, mounts and uid switches need root in the container"
    assert worker["cap_drop"] == ["ALL"]
    assert {"SYS_ADMIN", "NET_ADMIN", "SETUID", "SETGID", "SETPCAP", "KILL"} <= set(worker["cap_add"])
    assert {"seccomp=unconfined", "apparmor=unconfined"} <= set(worker["security_opt"])
    assert worker["cgroup"] == "private", "the cgroup tree it writes is its own, not the host's"
    assert "remount,rw /sys/fs/cgroup" in " ".join(worker["entrypoint"])
    assert worker["environment"].get("JOBMESH_WORKER_SANDBOX", "on") != "off"
    for name in ("scheduler", "monitor", "gateway", "migrate"):
        assert not {"cap_add", "security_opt", "user"} & set(services[name]), f"{name} needs no privilege"


def test_only_the_scheduler_holds_auth_secrets() -> None:
    services = load()["services"]
    for name in ("migrate", "scheduler", "worker", "monitor", "gateway"):
        secrets = {k for k in services[name]["environment"] if k.startswith(("JOBMESH_JWT_", "JOBMESH_ADMIN_"))}
        if name == "scheduler":
            assert {"JOBMESH_JWT_SECRET", "JOBMESH_ADMIN_PASSWORD"} <= secrets
        else:
            assert not secrets, f"{name} holds {secrets}"
    assert "JOBMESH_DATABASE_URL" not in services["gateway"]["environment"], "the gateway reads neither store"


def test_redis_requires_the_password_every_url_carries() -> None:
    services = load()["services"]
    command = services["redis"]["command"]
    password = interpolated(command[command.index("--requirepass") + 1])
    assert password and "${JOBMESH_REDIS_PASSWORD" in command[command.index("--requirepass") + 1]
    assert interpolated(services["redis"]["environment"]["REDISCLI_AUTH"]) == password, "the health check logs in"
    urls = {n: s.get("environment", {}).get("JOBMESH_REDIS_URL") for n, s in services.items()}
    urls = {n: url for n, url in urls.items() if url}
    assert {"scheduler", "worker", "monitor"} <= set(urls)
    for name, url in urls.items():
        assert urlparse(interpolated(url)).password == password, f"{name}: {url}"


def test_jobmesh_connects_to_mysql_as_its_own_user() -> None:
    services = load()["services"]
    mysql = services["mysql"]["environment"]
    assert mysql["MYSQL_USER"] != "root"
    assert "${" in mysql["MYSQL_PASSWORD"] and "${" in mysql["MYSQL_ROOT_PASSWORD"], "passwords from variables"
    for name in ("migrate", "scheduler", "worker", "monitor"):
        url = urlparse(interpolated(services[name]["environment"]["JOBMESH_DATABASE_URL"]))
        assert (url.username, url.password) == (mysql["MYSQL_USER"], interpolated(mysql["MYSQL_PASSWORD"])), name


def test_the_scheduler_takes_forwarded_client_addresses_from_the_gateway_only() -> None:
    compose = load()
    services = compose["services"]
    gateway = services["gateway"]["networks"]["default"]["ipv4_address"]
    subnet = compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(gateway) in ipaddress.ip_network(subnet)
    # Not the subnet: published ports reach containers from its bridge address.
    assert services["scheduler"]["environment"]["JOBMESH_TRUSTED_PROXIES"] == gateway
