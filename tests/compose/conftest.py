"""The compose stack test runs only when asked for (``-m compose``, `make test-compose`): it builds
images and starts seven containers, minutes of work that the unit suite should not pay for."""

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "compose: starts the docker compose stack for real (make test-compose)")


def pytest_collection_modifyitems(config, items):
    if "compose" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="the docker compose stack test runs with `make test-compose` (pytest -m compose)")
    for item in items:
        if "compose" in item.keywords:
            item.add_marker(skip)
