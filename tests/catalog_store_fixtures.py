"""The catalog store's test fixtures, shared by its tests (tests/test_catalog_store*.py; conftest's pytest_plugins)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator:
    """A CatalogStore in a fresh folder, closed after the test."""
    from pipeline.core.catalog.store import CatalogStore  # faiss: only for the tests that ask for a store

    with CatalogStore(tmp_path / "catalog") as opened:
        yield opened
