"""Fixtures shared by integration test modules."""

from __future__ import annotations

import pytest

from tests.integration.debutil import BuiltDeb, build_deb


@pytest.fixture(scope="session")
def built_deb(tmp_path_factory) -> BuiltDeb:
    """The .deb of the current tree, built once per test session (test_deb.py, test_systemd.py)."""
    return build_deb(tmp_path_factory.mktemp("deb"))
