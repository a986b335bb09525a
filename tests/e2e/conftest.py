from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import Proc
from tests.support.real_mesh import RealMesh, start_mesh


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes appended here are killed after the test, whatever happened."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()


@pytest.fixture(scope="module")
def real_mesh() -> Iterator[RealMesh]:
    """The whole mesh as real processes on a fresh database, shared by a module's tests."""
    with start_mesh() as mesh:
        yield mesh
