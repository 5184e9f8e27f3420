"""The engine's notification rows write the bytes the pydantic schema writes, to the byte."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from decisions.notification_row import NotificationRow, iso_time
from decisions.records import Notification
from tests.unit.test_outbox import engine_candidates, odd_candidate

texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
zones = st.sampled_from([UTC, timezone(timedelta(hours=9)), timezone(timedelta(hours=-5, minutes=-30))])


def test_the_engines_candidates_write_what_the_schema_writes() -> None:
    rows = [c.notification for c in [*engine_candidates(), odd_candidate()]]
    assert len(rows) > 20
    for row in rows:
        assert isinstance(row, NotificationRow)
        assert row.dumps() == row.record().dumps()
        assert Notification.loads(row.dumps()) == row.record()


@settings(max_examples=300, deadline=None)
@given(
    texts, texts, st.one_of(st.none(), texts), st.one_of(st.none(), texts),
    st.sampled_from(["fcm_token", "installation_id"]), st.integers(0, 4_102_444_800_000),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31)), zones,
)  # fmt: skip
def test_any_fields_write_the_schemas_bytes(
    title: str, body: str, deeplink: str | None, token: str | None, kind: str, ts_ms: int, expires: datetime,
    zone: timezone,
) -> None:  # fmt: skip
    row = NotificationRow(
        "n-1", "dev\u00e9\n\"x", "camp", "st-1", ts_ms, "ja", title, body, deeplink, token,
        kind,  # type: ignore[arg-type]
        expires.replace(tzinfo=zone),
    )  # fmt: skip
    assert row.dumps() == row.record().dumps()


def test_times_are_written_in_utc_with_a_fraction_only_when_there_is_one() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert iso_time(datetime(2026, 11, 24, 12, 0, tzinfo=tokyo)) == "2026-11-24T03:00:00Z"
    assert iso_time(datetime(2026, 11, 24, 12, 0, 1, 806000, tzinfo=tokyo)) == "2026-11-24T03:00:01.806000Z"
    assert iso_time(datetime(2026, 11, 24, 0, 0, 0, 5, tzinfo=UTC)) == "2026-11-24T00:00:00.000005Z"
