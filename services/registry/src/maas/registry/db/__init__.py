"""Persistence: ORM rows, the session boundary, migrations."""
