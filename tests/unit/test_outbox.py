"""The outbox record between the decision step and the budget step, read without pydantic."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from decisions.decision_row import DecisionRow
from decisions.engine import Candidate, Engine, apply_budget
from decisions.notification_row import NotificationRow
from decisions.pings import parse_ping
from decisions.records import Decision, Notification
from decisions.replay import DictStates
from geofences.load import load_catalog
from streams.outbox import Pending, candidate_bytes
from streams.phones import simulate
from tests.conftest import REPO

START_MS = 1795489200000  # 2026-11-24T12:00:00+09:00


def engine_candidates() -> list[Candidate]:
    """Candidates of 300 simulated phones on the example catalog (every locale it offers)."""
    catalog = load_catalog([REPO / "config" / "catalog"])
    records, sim = simulate(catalog, 300, START_MS, seed=5, spread_s=120.0)
    devices = {d.device_id: d for d in records}
    engine, states = Engine.for_catalog(catalog), DictStates()
    pings = [parse_ping(orjson.dumps(p.body)) for p in sim]
    out: list[Candidate] = []
    for i in range(0, len(pings), 500):
        out += engine.decide(pings[i : i + 500], states, devices)[1]  # type: ignore[arg-type]
    return out


def odd_candidate() -> Candidate:
    """Text JSON escapes, no token or deeplink, an unlimited budget."""
    at = datetime(2026, 11, 24, 3, 0, 0, 7000, tzinfo=UTC)
    nid = "n-1"
    row = DecisionRow('d"1\\', 1795489200007, "s/東京", "c\n1", "exit", "notify", "ok", nid, "v\t1")
    note = NotificationRow(
        nid, 'd"1\\', "c\n1", "s/東京", 1795489200007, "ja", '「秋」 "latte" \\ 🍂', "line\nbreak\u0001", None, None,
        "fcm_token", at,
    )  # fmt: skip
    return Candidate(row, note, None)


def test_the_budget_step_reads_back_the_bytes_the_decision_step_wrote() -> None:
    cands = [*engine_candidates(), odd_candidate()]
    assert len(cands) > 20
    for c in cands:
        got = Pending.loads(candidate_bytes(c))
        assert got.decision.dumps() == c.decision.dumps()
        assert got.decision_bytes == c.decision.dumps()  # what the budget step writes when it stands
        assert got.decision == c.decision
        assert got.notification == c.notification.dumps()
        assert Notification.loads(got.notification) == c.notification.record()  # what the delivery step reads
        assert got.budget == c.budget and got.notification_id == c.notification.notification_id
        final, spend = apply_budget(got.decision, 0, 0)  # nothing left: suppressed for its budget
        assert not spend or got.budget is None
        if not spend:
            assert Decision.loads(final.dumps()).reason == "budget"


def bad(**change: object) -> bytes:
    obj = orjson.loads(candidate_bytes(odd_candidate()))
    for path, value in change.items():
        *parents, last = path.split("__")
        target = obj
        for name in parents:
            target = target[name]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return orjson.dumps(obj)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"{not json", "unexpected character"),
        (b"[1]", "an outbox record is an object"),
        (bad(decision=KeyError), "decision: missing"),
        (bad(notification="x"), "notification: missing, or not an object"),
        (bad(budget="3"), "budget: an integer or null"),
        (bad(budget=True), "budget: an integer or null"),
        (bad(notification__notification_id="n-2"), "notification.notification_id differs"),
        (bad(decision__outcome="suppressed"), "decision.outcome: a candidate is a notify decision"),
        (bad(decision__transition="walk"), "decision.transition: one of enter, dwell, exit"),
        (bad(decision__ts="yesterday"), "decision.ts: not an ISO time"),
        (bad(decision__ts="2026-11-24T03:00:00"), "decision.ts: a time without its zone"),
        (bad(decision__device_id=7), "decision.device_id: missing, or not a string"),
        (bad(decision__catalog_version=KeyError), "decision.catalog_version: missing"),
    ],
)
def test_a_bad_outbox_record_names_what_is_wrong(raw: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Pending.loads(raw)
