"""Shared fixtures live in tests/fixtures/, one module per real server they start."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.prefect",
    "tests.fixtures.sandbox",
    "tests.fixtures.runbooks",
]
