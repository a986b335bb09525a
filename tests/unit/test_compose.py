"""compose.yaml is validated structurally (there is no container engine here)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

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
