"""The served lead board: paged JSON from the score table, parameters bound, never SQL."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipelines.board_server import board_server
from pipelines.board_store import LeadQuery
from tests.board_fixtures import OWNERS, write_board_entities, write_score_table

ROWS = 600


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("board-out")
    write_score_table(out / "leadscore.duckdb", ROWS)
    write_board_entities(out / "board", ROWS)
    return out


@pytest.fixture(scope="module")
def base_url(out):
    server = board_server(f"duckdb:///{out / 'leadscore.duckdb'}", out / "board", "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    server.RequestHandlerClass.store.close()


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.load(reply)


def test_pages_filter_and_sort(base_url):
    first = get(f"{base_url}/api/leads?limit=50")
    assert first["total"] == ROWS and len(first["rows"]) == 50
    scores = [r["score"] for r in first["rows"]]
    assert scores == sorted(scores, reverse=True)
    second = get(f"{base_url}/api/leads?limit=50&offset=50")
    assert not {r["id"] for r in first["rows"]} & {r["id"] for r in second["rows"]}
    high = get(f"{base_url}/api/leads?band=high&limit=500")
    assert high["rows"] and {r["band"] for r in high["rows"]} == {"high"}
    owned = get(f"{base_url}/api/leads?owner=owner3%40example.com&sort=name&limit=500")
    assert owned["total"] == ROWS // OWNERS
    assert {r["owner"] for r in owned["rows"]} == {"owner3@example.com"}
    names = [r["name"].lower() for r in owned["rows"]]
    assert names == sorted(names)
    finance = get(f"{base_url}/api/leads?q=FINANCE&limit=500")
    assert finance["total"] == ROWS // 4
    assert all(dict(r["fit"])["industry"] == "finance" for r in finance["rows"])


def test_rows_show_names_and_points_that_add_up(base_url):
    row = get(f"{base_url}/api/leads?limit=1")["rows"][0]
    assert row["name"].startswith("Lead ") and row["company"].startswith("Company ")
    assert [label for label, _ in row["fit"]] == ["industry", "employees"]
    impacts = [r["impact"] for r in row["up"] + row["down"]]
    assert row["base"] + sum(impacts) + row["other"] == row["score"]
    assert not any(r["text"].startswith(("+", "-")) for r in row["up"] + row["down"])


@pytest.mark.parametrize(
    "text", ["' OR 1=1 --", "x'); DROP TABLE leads; --", "100%", "_", "\\", '"; SELECT 1']
)
def test_search_text_is_a_bound_parameter(base_url, text):
    from urllib.parse import quote

    assert get(f"{base_url}/api/leads?q={quote(text)}")["total"] == 0
    assert get(f"{base_url}/api/leads?limit=1")["total"] == ROWS


@pytest.mark.parametrize(
    "query", ["sort=score;DROP", "limit=0", "limit=100000", "offset=-1", "change=x", "order=1"]
)
def test_bad_requests_get_a_400_with_a_sentence(base_url, query):
    with pytest.raises(urllib.error.HTTPError) as caught:
        get(f"{base_url}/api/leads?{query}")
    assert caught.value.code == 400
    assert json.load(caught.value)["error"]


def test_lead_query_orders_from_constants_only():
    query = LeadQuery.from_params({"sort": ["-delta"], "q": ["a'b"]})
    where, params = query.where()
    assert "a'b" not in where and params == ["%a'b%"] * 3
    assert query.order().startswith("score_delta DESC")


def test_page_and_api_are_compressed_and_not_cached(base_url):
    request = urllib.request.Request(f"{base_url}/", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.headers["Content-Encoding"] == "gzip"
        assert reply.headers["Cache-Control"] == "no-store"
        page = gzip.decompress(reply.read()).decode()
    assert 'data-mode="served"' in page and "connect-src 'self'" in page
    assert "600 scored of 600" in page


def test_leadscore_board_command_serves_the_score_table(out, tmp_path):
    config = tmp_path / "leadscore.yaml"
    config.write_text(f"output:\n  dir: {out}\nboard:\n  port: 0\n")
    command = [str(Path(sys.executable).parent / "leadscore"), "board", "-c", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = ""
        while "http://" not in line:
            line = process.stdout.readline()
            assert line or process.poll() is None, "leadscore board exited early"
        url = line.split("http://", 1)[1].split("/", 1)[0]
        assert url.startswith("127.0.0.1:")
        assert get(f"http://{url}/api/leads?limit=3")["total"] == ROWS
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_leadscore_board_without_a_score_table_says_so(tmp_path):
    config = tmp_path / "leadscore.yaml"
    config.write_text(f"output:\n  dir: {tmp_path / 'none'}\n")
    command = [str(Path(sys.executable).parent / "leadscore"), "board", "-c", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    assert "leadscore nightly" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
