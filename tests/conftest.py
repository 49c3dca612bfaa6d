"""Fixtures shared by the test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import SHARED_V1, example_plugin_env


@pytest.fixture
def shared_v1() -> Path:
    """../shared/data/castillo-v1, or a clean skip where it is absent."""
    if not SHARED_V1.is_dir():
        pytest.skip("../shared/data/castillo-v1 is not present on this machine")
    return SHARED_V1


@pytest.fixture(scope="session")
def example_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment under which `castillo` finds docs/examples/castillo-example-plugin
    as an installed distribution (see tests.helpers.example_plugin_env)."""
    return example_plugin_env(tmp_path_factory.mktemp("example-site"))
