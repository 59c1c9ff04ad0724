"""``leadscore board``: the lead board served from the score table, a page at a time.

Standard library only (:class:`http.server.ThreadingHTTPServer`), on 127.0.0.1 by
default. Routes:

- ``GET /``: the board page (the static board's template, rows fetched as needed);
- ``GET /api/leads?band=&owner=&kind=&change=&q=&sort=-score&offset=0&limit=100``:
  one page of leads, ``{"total", "offset", "rows"}`` (:class:`~pipelines.board_store.LeadQuery`);
- ``GET /api/options``: the owners and kinds to filter by.

Replies are gzip-compressed when the browser accepts it, never cached, and JSON is
served as ``application/json`` with ``nosniff``: the page renders every value with
``textContent``, so nothing from the data becomes markup.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pipelines.board import EMBED_LIMIT, embed_json, environment
from pipelines.board_store import BoardStore, LeadQuery

log = logging.getLogger(__name__)

#: Replies smaller than this go uncompressed.
_GZIP_MIN = 1024


def render_served_page(store: BoardStore) -> str:
    """The board page of the server: header from the score table, rows fetched later."""
    return (
        environment()
        .get_template("board.html.j2")
        .render(header=store.header, data_json=embed_json([]), mode="served", served=False,
                embed_limit=EMBED_LIMIT)
    )  # fmt: skip


class BoardHandler(BaseHTTPRequestHandler):
    """Answers the board's page and its JSON API from :attr:`store`."""

    store: BoardStore
    server_version = "leadscore-board"

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        """Route one GET request."""
        url = urlsplit(self.path)
        try:
            if url.path in ("/", "/index.html"):
                self._reply(render_served_page(self.store), "text/html; charset=utf-8")
            elif url.path == "/api/leads":
                query = LeadQuery.from_params(parse_qs(url.query, keep_blank_values=True))
                self._json(self.store.page(query))
            elif url.path == "/api/options":
                self._json(self.store.options())
            else:
                self._json({"error": "Not found."}, HTTPStatus.NOT_FOUND)
        except ValueError as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except Exception:
            log.exception("The board server failed on %s.", url.path)
            self._json({"error": "The board server failed; see its log."}, HTTPStatus(500))

    def _json(self, data: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        self._reply(text, "application/json; charset=utf-8", status)

    def _reply(self, text: str, content_type: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        body = text.encode("utf-8")
        gzipped = "gzip" in self.headers.get("Accept-Encoding", "") and len(body) >= _GZIP_MIN
        if gzipped:
            body = gzip.compress(body, compresslevel=5)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Requests go to the debug log, not stderr."""
        log.debug("%s " + format, self.address_string(), *args)


def board_server(database_url: str, board_dir: Path, host: str, port: int) -> ThreadingHTTPServer:
    """A server of the board of ``database_url``'s score table, bound but not yet serving.

    Args:
        database_url: The score database (``Settings.database_url``).
        board_dir: The run's ``board/`` folder (display columns, band rule).
        host: The address to listen on; anything but a loopback address is logged
            as a warning (the board shows personal data).
        port: The port; 0 picks a free one (``server.server_address`` tells which).
    """
    if not _loopback(host):
        log.warning("The lead board listens on %s, beyond this machine: it shows personal data.",
                    host)  # fmt: skip
    store = BoardStore(database_url, board_dir)
    handler = type("Handler", (BoardHandler,), {"store": store})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
