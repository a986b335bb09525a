"""Repositories: the only code that issues SQL. They return domain objects."""
