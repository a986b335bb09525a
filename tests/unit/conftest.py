"""Unit tests run anywhere in seconds (`make unit`): the fixtures that reach MariaDB or Redis
are refused here; such a test belongs in tests/integration."""

from __future__ import annotations

import pytest


@pytest.fixture
def mysql_url() -> str:
    pytest.fail("a unit test uses no database: move it to tests/integration")


@pytest.fixture
def redis() -> None:
    pytest.fail("a unit test uses no Redis: move it to tests/integration")
