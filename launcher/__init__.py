"""The ``jobmesh`` command: it starts every process, so it sits above all of them."""
