"""Fixtures shared by the pipelines tests."""

from __future__ import annotations

import pytest

from tests.services import PostgresUnavailable, start_postgres


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A real PostgreSQL server on 127.0.0.1 for this test session (worker): its URL."""
    try:
        with start_postgres(tmp_path_factory.mktemp("postgres")) as server:
            yield server.url
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
