"""Fixtures shared by the pipelines tests."""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.services import PostgresUnavailable, start_postgres

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory):
    """A real PostgreSQL server on 127.0.0.1 for this test session (worker): its URL."""
    try:
        with start_postgres(tmp_path_factory.mktemp("postgres")) as server:
            yield server.url
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def postgres_url(postgres_server_url):
    """A fresh, empty database on the session's PostgreSQL server: its URL."""
    name = f"leadscore_test_{next(_databases)}"
    admin = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
