"""Code shared by every jobmesh process."""
