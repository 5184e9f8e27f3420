"""The engine's decisions are written without pydantic: the same bytes as the schema's record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from decisions.decision_row import DecisionRow, iso_utc
from decisions.records import Decision

# 1970 to 2200: pings are validated to recent times; past ~2242 a float of seconds no longer
# holds a millisecond exactly, and the records' own datetime (from that float) drifts from it
MS = st.integers(min_value=0, max_value=7_258_118_399_999)
TEXT = st.text(max_size=40)  # every code point but lone surrogates: quotes, controls, CJK, emoji


@given(MS)
@settings(max_examples=2_000)
def test_iso_utc_is_the_records_time_format(ts_ms: int) -> None:
    at = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    want = Decision(device_id="d", ts=at, store_id="s", campaign_id=None, transition="enter",
                    outcome="suppressed", reason="r", catalog_version="v").dumps()  # fmt: skip
    assert f'"ts":"{iso_utc(ts_ms)}"'.encode() in want


def test_iso_utc_at_calendar_edges() -> None:
    for text in ("1970-01-01T00:00:00", "2000-02-29T23:59:59.999", "2024-12-31T23:59:59.001", "2100-03-01T00:00:00",
                 "2026-11-15T10:00:00.250", "9999-12-31T23:59:59.999", "1969-12-31T23:59:59.999"):  # fmt: skip
        at = datetime.fromisoformat(text).replace(tzinfo=UTC)
        ms = (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
        assert iso_utc(ms) == at.isoformat().replace("+00:00", "Z")


@given(
    device=TEXT.filter(bool), ts_ms=MS, store=TEXT, campaign=st.none() | TEXT,
    transition=st.sampled_from(["enter", "dwell", "exit"]), outcome=st.sampled_from(["notify", "suppressed"]),
    reason=TEXT, nid=st.none() | TEXT, version=TEXT,
)  # fmt: skip
@settings(max_examples=1_000)
def test_a_row_writes_its_records_bytes(
    device: str, ts_ms: int, store: str, campaign: str | None, transition: str, outcome: str, reason: str,
    nid: str | None, version: str,
) -> None:  # fmt: skip
    row = DecisionRow(device, ts_ms, store, campaign, transition, outcome, reason, nid, version)  # type: ignore[arg-type]
    record = row.record()
    assert row.dumps() == record.dumps()
    again = DecisionRow.of(Decision.loads(row.dumps()))
    assert again == row and hash(again) == hash(row)


def test_a_budget_suppression_keeps_the_decision_but_its_outcome() -> None:
    row = DecisionRow("d1", 1_763_200_800_250, "s1", "c1", "dwell", "notify", "ok", "n" * 32, "v7")
    cut = row.suppressed("budget")
    assert (cut.outcome, cut.reason, cut.notification_id) == ("suppressed", "budget", None)
    assert cut.fields()[:5] == row.fields()[:5] and cut.catalog_version == "v7"
    assert b'"notification_id"' not in cut.dumps() and cut != row
