"""The ``board`` settings section: what the lead board shows and where it is served."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BoardDisplay(BaseModel):
    """Entity columns the board shows; ``None`` picks the first common column present.

    ``name``: ``full_name``, ``name``, ``contact_name``...; ``company``: ``company``,
    ``company_name``, ``account_name``...; ``owner``: ``owner_email``, ``owner``...;
    ``attributes``: the fit attributes shown (``industry``, ``employees``...).
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    company: str | None = None
    owner: str | None = None
    attributes: tuple[str, ...] | None = None


class BoardSettings(BaseModel):
    """The lead board: display columns, the static page's size, ``leadscore board``.

    ``embed_limit``: most leads the nightly run's static ``board/index.html`` carries;
    above it the page says how to open the served board (``leadscore board``), which
    pages through the score table on ``host``:``port``.
    """

    model_config = ConfigDict(extra="forbid")

    display: BoardDisplay = Field(default_factory=BoardDisplay)
    #: Most leads the static ``board/index.html`` carries; above it, use ``leadscore
    #: board``.
    embed_limit: int = Field(20_000, ge=0)
    #: Address ``leadscore board`` listens on.
    host: str = "127.0.0.1"
    #: Port ``leadscore board`` listens on (0: any free port).
    port: int = Field(8765, ge=0, le=65535)
