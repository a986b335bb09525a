"""Helpers shared by the tests: builders, gRPC call checks, harnesses for the processes.
Fixtures live in the ``conftest.py`` files and use these."""
