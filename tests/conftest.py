"""Shared fixtures. Framework-specific fixtures live in their own plugin modules."""

from __future__ import annotations

import pytest

import datasets

pytest_plugins = ["fixtures_keras", "fixtures_torch", "fixtures_broker", "fixtures_bundle"]


@pytest.fixture(scope="session")
def airline():
    """The airline-passengers series (144 monthly values)."""
    return datasets.airline()
