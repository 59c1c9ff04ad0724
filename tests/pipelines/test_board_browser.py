"""Lead board pages in headless Chromium: rendering, filters, sorting and the phone layout."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from pipelines.board import write_board
from tests.chromium import HeadlessChromium, chromium_binary
from tests.pipelines.test_board import EVIL_NAME, make_scored

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.browser
def test_board_in_headless_chromium(tmp_path, record_property):
    scored = make_scored(60, seed=5, no_consent=(3, 8))
    page = write_board(scored, tmp_path / "board", date(2025, 6, 1)).page
    expected_high = int(((scored["status"] == "scored") & (scored["band"] == "high")).sum())
    assert expected_high > 0
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with HeadlessChromium(chromium_binary(), profile) as browser:
        browser.open(page.as_uri())
        rendered = browser.evaluate("document.querySelectorAll('#board tbody tr').length")
        assert rendered == len(scored) - 2
        found = browser.evaluate(
            "Array.from(document.querySelectorAll('.lead-name'))"
            f".filter(e => e.textContent === {json.dumps(EVIL_NAME)}).length"
        )
        assert found == 1, "the lead named like a script tag must show as text"
        bands = browser.evaluate(
            "(() => { const s = document.getElementById('band-filter'); s.value = 'high';"
            " s.dispatchEvent(new Event('change'));"
            " return Array.from(document.querySelectorAll('#board tbody tr'))"
            ".map(r => r.dataset.band); })()"
        )
        assert bands and set(bands) == {"high"} and len(bands) == expected_high
        browser.evaluate(
            "(() => { const s = document.getElementById('band-filter'); s.value = '';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        # Clicking the Score header flips the default (descending) order.
        ascending = browser.evaluate(
            "(() => { document.querySelector('th[data-sort=score]').click();"
            " return Array.from(document.querySelectorAll('#board tbody .score'))"
            ".map(e => Number(e.textContent)); })()"
        )
        assert ascending == sorted(ascending) and len(ascending) == rendered
        browser.evaluate("document.querySelector('th[data-sort=score]').click()")
        screenshot = browser.screenshot(REPO_ROOT / "test-artifacts" / "lead-board.png")
        assert browser.errors() == []
        assert browser.dialogs() == []
    record_property("screenshot", str(screenshot))
    print(f"lead board screenshot: {screenshot}")


@pytest.mark.browser
def test_static_board_filters_live_in_the_url_and_phones_see_reasons(tmp_path):
    scored = make_scored(40, seed=7, no_consent=())
    page = write_board(scored, tmp_path / "board", date(2025, 6, 1)).page
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with HeadlessChromium(chromium_binary(), profile) as browser:
        browser.open(page.as_uri() + "#band=medium&owner=Ben%20Cole&sort=name")
        view = browser.evaluate(
            "({band: document.getElementById('band-filter').value,"
            " owner: document.getElementById('owner-filter').value,"
            " rows: Array.from(document.querySelectorAll('#board tbody tr')).map(r =>"
            "  [r.dataset.band, r.querySelector('td.owner').textContent])})"
        )
        assert view["band"] == "medium" and view["owner"] == "Ben Cole"
        expected = ((scored["band"] == "medium") & (scored["owner"] == "Ben Cole")).sum()
        assert len(view["rows"]) == expected > 0
        assert {tuple(r) for r in view["rows"]} == {("medium", "Ben Cole")}
        browser.open("about:blank")
        browser.open(page.as_uri(), width=390, height=844, mobile=True)
        height = browser.evaluate(
            "document.querySelector('#board tbody td.reasons').getBoundingClientRect().height"
        )
        assert height > 40
        assert browser.errors() == []
