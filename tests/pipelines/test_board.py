"""Lead board: escaping, content, display columns, and pages per run."""

from __future__ import annotations

import json
from datetime import date
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from models.bands import BandRule
from pipelines.board import (
    board_header,
    board_rows,
    describe_models,
    embed_json,
    render_board,
    write_board,
)

EVIL_NAME = "<script>alert(1)</script>"


REASONS_UP = [
    ("pricing page visits", "engagement", "4 pricing page visits in the last 7 days"),
    ("demo requests", "engagement", "1 demo requests in the last 30 days"),
    ("industry", "fit", "Industry: software"),
    ("webinars", "engagement", "2 webinars attended in the last 30 days"),
]
REASONS_DOWN = [
    (
        "unsubscribes",
        "engagement",
        "Unsubscribed from 5.0% of delivered emails in the last 90 days",
    ),
    ("company size", "fit", "Company size: 1-10"),
    ("recent activity", "engagement", "No activity of any kind for 41 days"),
]


class _VisibleText(HTMLParser):
    """Collects the text a reader sees: everything outside ``<script>`` and ``<style>``."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        self.hidden += tag in ("script", "style")

    def handle_endtag(self, tag):
        self.hidden -= tag in ("script", "style")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def visible_text(page: str) -> str:
    """The page's visible text, whitespace collapsed to single spaces."""
    parser = _VisibleText()
    parser.feed(page)
    return " ".join(" ".join(parser.parts).split())


def make_scored(
    n: int = 40,
    *,
    seed: int = 0,
    as_of: str = "2025-06-01",
    no_consent: tuple[int, ...] = (3,),
    evil_name_at: int | None = 1,
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    as_of_ts = pd.Timestamp(as_of, tz="UTC")
    conversion = rng.uniform(0, 1, n)
    churn = rng.uniform(0, 0.6, n)
    score = np.round(conversion * 100).astype(int)
    kind = np.where(rng.uniform(size=n) < 0.7, "lead", "customer")
    band = np.where(
        score >= 70, "high", np.where((kind == "customer") & (churn > 0.4), "at-risk", "medium")
    )
    bands = ["high", "medium", "at-risk"]
    previous_band = [bands[i] for i in rng.integers(0, 3, n)]
    delta = rng.integers(-15, 16, n)

    def reasons(pool, sign):
        picks = rng.choice(len(pool), size=2, replace=False)
        return json.dumps(
            [
                {
                    "concept": pool[i][0],
                    "group": pool[i][1],
                    "text": pool[i][2],
                    "impact": float(sign * rng.integers(1, 20)),
                }
                for i in picks
            ]
        )

    up = [reasons(REASONS_UP, 1) for _ in range(n)]
    down = [reasons(REASONS_DOWN, -1) for _ in range(n)]
    names = [f"Company {i:03d}" for i in range(n)]
    if evil_name_at is not None:
        names[evil_name_at] = "<script>alert(1)</script>"
    frame = pd.DataFrame(
        {
            "entity_id": [f"e{i:04d}" for i in range(n)],
            "crm_id": [f"00Q{i:012d}" if i % 5 else None for i in range(n)],
            "kind": kind,
            "status": "scored",
            "conversion_probability": conversion,
            "churn_probability": churn,
            "score": pd.array(score, dtype="Int64"),
            "band": band,
            "rule_score": rng.integers(0, 150, n).astype(float),
            "rule_band": [bands[i] for i in rng.integers(0, 3, n)],
            "score_source": "model",
            "model_versions": json.dumps({"churn": "2", "conversion": "3"}),
            "scored_at": pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(hours=2),
            "as_of": as_of_ts,
            "previous_band": previous_band,
            "score_delta": delta.astype(float),
            "reasons_up": up,
            "reasons_down": down,
            "reasons_text": ["Up: pricing page visits; Down: unsubscribes"] * n,
            "reasons_computed_at": as_of_ts,
            "industry": rng.choice(["software", "retail", "finance"], n),
            "company_size": rng.choice(["1-10", "11-50", "51-200"], n),
            "country": rng.choice(["FR", "DE", "US"], n),
            "lead_source": rng.choice(["webinar", "organic", "paid"], n),
            "job_level": rng.choice(["manager", "director", "c-level"], n),
            "owner": rng.choice(["Ana Ruiz", "Ben Cole"], n),
            "name": names,
        }
    )
    for i in no_consent:
        for column in ("conversion_probability", "churn_probability", "rule_score", "score_delta"):
            frame.loc[i, column] = np.nan
        for column in (
            "band",
            "rule_band",
            "previous_band",
            "reasons_up",
            "reasons_down",
            "reasons_text",
        ):
            frame.loc[i, column] = None
        frame.loc[i, "score"] = pd.NA
        frame.loc[i, "status"] = "not scored: no consent"
    return frame


# --- tests ---


def test_embed_json_cannot_close_its_script_block():
    payload = [{"name": "</script><script>alert(1)</script>", "note": "a & b > c"}]
    embedded = str(embed_json(payload))
    assert "<" not in embedded and ">" not in embedded and "&" not in embedded
    assert json.loads(embedded) == payload


def test_data_text_is_escaped_in_the_page():
    scored = make_scored(12, seed=1)
    scored.loc[0, "owner"] = '"><img src=x onerror=alert(2)>'
    html = render_board(scored, date(2025, 6, 1), band_rule="high when <b>p</b> >= 0.4 & up")
    assert EVIL_NAME not in html
    assert "<img" not in html
    # Only the page's own two script blocks exist: the JSON data and the board code.
    assert html.count("<script") == 2
    assert "high when &lt;b&gt;p&lt;/b&gt; &gt;= 0.4 &amp; up" in html
    data = html.split('id="board-data">', 1)[1].split("</script>", 1)[0]
    names = {row["name"] for row in json.loads(data)}
    assert EVIL_NAME in names


def test_board_leaves_out_entities_without_consent_and_counts_them():
    scored = make_scored(20, seed=2, no_consent=(0, 5, 7))
    rows = board_rows(scored)
    shown = {row["id"] for row in rows}
    hidden = set(scored.loc[[0, 5, 7], "entity_id"])
    assert not shown & hidden
    assert len(rows) == len(scored) - len(hidden)
    header = board_header(scored, date(2025, 6, 1), None)
    assert ("no consent", len(hidden)) in header["not_scored"]
    assert sum(n for _, n in header["bands"]) == len(rows)


def test_how_to_read_says_the_band_rule_and_the_models_in_sentences():
    scored = make_scored(12, seed=5, no_consent=())
    scored.loc[:3, "model_versions"] = json.dumps({"churn": "rules", "conversion": "3"})
    rule = BandRule(conversion_threshold=0.0473, churn_threshold=None, source="validation")

    text = visible_text(render_board(scored, date(2025, 6, 1), band_rule=rule.describe()))

    assert (
        "Band rule: at-risk: churn probability never; high: conversion probability 4.7% or "
        "more; medium: everyone else scored (thresholds from validation)."
    ) in text
    assert "Models: churn v2 or rule score (no model), conversion v3 · score source: model 12" in (
        text
    )
    assert "{'" not in text and '{"' not in text


def test_a_regenerated_page_reads_its_band_rule_back_unchanged():
    import html

    from pipelines.scrubbing import _BAND_RULE

    scored = make_scored(8, seed=6, no_consent=())
    sentence = BandRule(0.25, 0.5, source="conversion: settings; churn: settings").describe()
    page = render_board(scored, date(2025, 6, 1), band_rule=sentence)
    read_back = html.unescape(_BAND_RULE.search(page).group(1))
    assert read_back == sentence
    assert render_board(scored, date(2025, 6, 1), band_rule=read_back) == page


@pytest.mark.parametrize(
    ("versions", "phrase"),
    [
        (['{"churn": "2", "conversion": "3"}'], "churn v2, conversion v3"),
        (
            ['{"churn": "rules", "conversion": "1"}', '{"churn": "rules", "conversion": "2"}'],
            "churn rule score (no model), conversion v1 or v2",
        ),
        ([], "none (rule scores only)"),
        (["conversion:v3 churn:v2"], "conversion:v3 churn:v2"),
    ],
)
def test_describe_models_names_each_target_and_version(versions, phrase):
    assert describe_models(versions) == phrase


def test_board_rows_carry_reasons_change_and_fit():
    scored = make_scored(10, seed=3, no_consent=())
    rows = {row["id"]: row for row in board_rows(scored)}
    for _, source in scored.iterrows():
        row = rows[source["entity_id"]]
        assert row["score"] == source["score"]
        assert row["delta"] == round(source["score_delta"])
        assert [r["text"] for r in row["up"]] == [
            r["text"] for r in json.loads(source["reasons_up"])
        ]
        assert all(r["impact"] < 0 for r in row["down"])
        assert dict(row["fit"])["industry"] == source["industry"]
        assert row["owner"] == source["owner"]


def test_unreadable_reasons_show_as_none():
    scored = make_scored(4, seed=4, no_consent=(), evil_name_at=None)
    scored.loc[0, "reasons_up"] = "{not json"
    rows = board_rows(scored)
    assert rows[0]["up"] == [] and rows[1]["up"]


def test_page_per_run_and_index_follows_the_newest(tmp_path):
    first = write_board(make_scored(6, as_of="2025-06-01"), tmp_path, date(2025, 6, 1))
    second = write_board(make_scored(6, as_of="2025-06-02"), tmp_path, date(2025, 6, 2))
    assert first.page != second.page and first.page.exists() and second.page.exists()
    assert second.index.read_text() == second.page.read_text()
    # Re-running the older date rewrites its page but keeps index.html on the newest.
    rerun = write_board(make_scored(6, seed=9, as_of="2025-06-01"), tmp_path, date(2025, 6, 1))
    assert rerun.index is None
    assert (tmp_path / "index.html").read_text() == second.page.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "2025-06-01.html", "2025-06-02.html", "index.html",
    ]  # fmt: skip


# --- display columns, the size limit of the static page, forget ---


def test_display_columns_come_from_the_settings_or_common_names():
    from pipelines.board_data import board_entities, display_columns
    from pipelines.board_settings import BoardDisplay

    entities = pd.DataFrame(
        {
            "entity_id": ["e1", "e2"],
            "full_name": ["Ana Ruiz", "Ben Cole"],
            "company": ["Acme", "Globex"],
            "owner_email": ["sam@x.io", "kim@x.io"],
            "industry": ["software", "retail"],
            "employees": [12, 400],
            "phone": ["+33 1", "+33 2"],
        }
    )
    chosen = display_columns(entities.columns, BoardDisplay())
    assert chosen == {
        "name": "full_name", "company": "company", "owner": "owner_email",
        "attributes": ["industry", "employees"],
    }  # fmt: skip
    configured = BoardDisplay(name="company", owner="owner_email", attributes=("employees",))
    kept = board_entities(entities, configured)
    assert list(kept.columns) == ["entity_id", "name", "company", "owner", "employees"]
    assert "phone" not in kept.columns and kept["name"].tolist() == ["Acme", "Globex"]

    scored = make_scored(2, seed=1, no_consent=(), evil_name_at=None)
    scored["entity_id"] = ["e1", "e2"]
    rows = board_rows(scored, board_entities(entities, BoardDisplay()))
    assert [(r["name"], r["company"], r["owner"]) for r in rows] == [
        ("Ana Ruiz", "Acme", "sam@x.io"), ("Ben Cole", "Globex", "kim@x.io"),
    ]  # fmt: skip
    assert dict(rows[1]["fit"]) == {"industry": "retail", "employees": 400}


def test_points_show_once_and_base_and_other_factors_are_read():
    scored = make_scored(1, seed=2, no_consent=(), evil_name_at=None)
    scored.loc[0, "reasons_up"] = json.dumps(
        [
            {
                "concept": "demo",
                "group": "engagement",
                "text": "+12 pts: 1 demo request",
                "impact": 12,
            }
        ]
    )
    scored.loc[0, "reasons_text"] = "Up: ... (points of the 0-100 score: base 23, other factors -4)"
    row = board_rows(scored)[0]
    assert row["up"][0]["text"] == "1 demo request"
    assert (row["base"], row["other"]) == (23, -4)


def test_above_the_embed_limit_the_page_says_how_to_open_the_served_board():
    scored = make_scored(30, seed=3, no_consent=())
    page = render_board(scored, date(2025, 6, 1), embed_limit=10)
    assert "leadscore board -c" in visible_text(page) and "more than the 10" in visible_text(page)
    data = page.split('id="board-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data) == []


def test_the_board_keeps_display_columns_of_scored_leads_and_forget_scrubs_them(tmp_path):
    from pipelines.board_data import board_entities
    from pipelines.board_settings import BoardDisplay
    from pipelines.scrubbing import regenerate_boards

    scored = make_scored(8, seed=4, no_consent=(2,))
    entities = board_entities(scored, BoardDisplay())
    write_board(scored, tmp_path / "board", date(2025, 6, 1), entities=entities)
    kept = pd.read_parquet(tmp_path / "board" / "entities.parquet")
    assert set(kept["entity_id"]) == set(scored["entity_id"]) - {scored.loc[2, "entity_id"]}
    regenerate_boards(tmp_path, [scored.loc[0, "entity_id"]])
    after = pd.read_parquet(tmp_path / "board" / "entities.parquet")
    assert scored.loc[0, "entity_id"] not in set(after["entity_id"]) and len(after) == 6


def _header_one_row_at_a_time(scored: pd.DataFrame) -> dict:
    """The header's counts as the board first worded them: per row, as text."""
    status = scored["status"].astype("string").fillna("not scored: unknown")
    mask = status.eq("scored")
    bands = scored.loc[mask, "band"].astype("string").value_counts()
    why = status[~mask].str.removeprefix("not scored:").str.strip().value_counts()
    return {
        "scored": int(mask.sum()),
        "bands": [(band, int(bands.get(band, 0))) for band in ("high", "medium", "at-risk")],
        "not_scored": sorted((str(k), int(v)) for k, v in why.items()),
        "score_sources": scored.loc[mask, "score_source"].dropna().astype(str)
        .value_counts().to_dict(),
    }  # fmt: skip


def test_the_header_counts_every_status_band_and_source_as_row_by_row():
    scored = make_scored(60, seed=4, no_consent=(1, 2))
    scored.loc[3, "status"] = None  # unknown
    scored.loc[4:6, "status"] = "not scored: already churned"
    scored.loc[7, "status"] = "not scored:already churned"  # worded alike
    scored.loc[8:9, "score_source"] = "rules (no champion model)"
    header = board_header(scored, date(2025, 6, 1), None)
    want = _header_one_row_at_a_time(scored)
    assert header["scored"] == want["scored"] and header["bands"] == want["bands"]
    assert sorted(header["not_scored"]) == want["not_scored"]
    assert ("already churned", 4) in header["not_scored"]
    assert header["score_sources"] == want["score_sources"]


def test_shown_entities_are_the_listed_rows_whether_ids_align_or_not():
    from pipelines.board import shown_entities

    ids = ["L1", "C2", "L3", "C4"]
    scored = pd.DataFrame({"entity_id": pd.Series(ids, dtype="str"),
                           "status": pd.Series(["scored", "not scored", "scored", "no consent"],
                                               dtype="str")})  # fmt: skip
    display = pd.DataFrame({"entity_id": pd.Series(ids, dtype="str"), "name": list("abcd")})
    assert shown_entities(scored, display)["name"].tolist() == ["a", "c"]  # aligned rows
    shuffled = display.iloc[[3, 2, 1, 0]].reset_index(drop=True)
    assert shown_entities(scored, shuffled)["name"].tolist() == ["c", "a"]  # looked up
    fewer = display.iloc[[2, 1]].reset_index(drop=True)
    assert shown_entities(scored, fewer)["name"].tolist() == ["c"]
