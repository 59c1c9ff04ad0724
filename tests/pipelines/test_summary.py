import pandas as pd

from pipelines.summary import RunSummary, band_moves, psi_status


def test_band_moves_counts_changes_and_new_entities():
    scored = pd.DataFrame(
        {
            "band": ["high", "medium", "medium", "at-risk", None],
            "previous_band": ["medium", "medium", None, "high", "high"],
        }
    )
    assert band_moves(scored) == {"high -> at-risk": 1, "medium -> high": 1, "new -> medium": 1}


def test_psi_status_thresholds():
    assert psi_status({"score": 0.05}, 0.1, 0.25) == ("ok", [])
    status, messages = psi_status({"score": 0.05, "login_count_30d": 0.2}, 0.1, 0.25)
    assert status == "warning" and "login_count_30d" in messages[0]
    status, _ = psi_status({"score": 0.3, "x": 0.2}, 0.1, 0.25)
    assert status == "failed"


def test_summary_markdown_flags_count_mismatch():
    summary = RunSummary(as_of="2025-12-01", entities_in=10, rows_out=9, bands={"high": 2})
    assert not summary.counts_match
    text = summary.to_markdown()
    assert "**NO**" in text and "| high | 2 |" in text
    assert summary.to_dict()["counts_match"] is False
