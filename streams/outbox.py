"""The outbox record: a notify candidate on its way from the decision step to the budget step.

``{"decision": …, "notification": …, "budget": n | null}``, keyed by campaign, the two records
written as their own bytes. The budget step reads it as a :class:`Pending`: it checks the
fields it decides by and keeps the notification's bytes as they were written, rather than
validating both records with pydantic again per candidate (~15 µs; the delivery step
validates each notification as it reads it, and the decision is rebuilt field by field).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

import orjson

from decisions.decision_row import DecisionRow
from decisions.engine import Candidate
from decisions.records import Transition

TRANSITIONS: tuple[str, ...] = get_args(Transition)


def candidate_bytes(c: Candidate) -> bytes:
    """An outbox record: the two records as their own ``dumps`` (joined, not serialised again)."""
    budget = b"null" if c.budget is None else str(c.budget).encode()
    return b'{"decision":%s,"notification":%s,"budget":%s}' % (c.decision.dumps(), c.notification.dumps(), budget)


@dataclass(slots=True)
class Pending:
    """An outbox record as the budget step reads it: the notify decision, the campaign's
    budget (None: unlimited), the notification's record as written, and the decision's (what
    the budget step writes when it lets the decision stand: not serialised again, ~1.5 µs)."""

    decision: DecisionRow
    budget: int | None
    notification: bytes
    decision_bytes: bytes

    @property
    def notification_id(self) -> str:
        nid = self.decision.notification_id
        assert nid is not None  # checked by loads
        return nid

    @classmethod
    def loads(cls, raw: bytes | None) -> Pending:
        """Read an outbox record; ``ValueError`` names the field that is missing or wrong.

        A record as :func:`candidate_bytes` lays it out is cut into its parts and only the
        decision parsed (~300 of ~770 bytes; the two records' bytes kept as written); any
        other layout is parsed whole. Either way the same checks, and the notification's id
        must be the decision's."""
        if raw is None:
            raise ValueError("an outbox record without a value")
        parts = _parts(raw)
        if parts is not None:
            d_raw, n_raw, budget_raw = parts
            d = orjson.loads(d_raw)
            decision, nid = _decision(d)
            if n_raw.startswith(b'{"v":1,"notification_id":%s,' % orjson.dumps(nid)):
                return cls(decision, _budget(orjson.loads(budget_raw)), n_raw, d_raw)
        obj = orjson.loads(raw)
        if not isinstance(obj, dict):
            raise ValueError("an outbox record is an object")
        d, n, budget = _field(obj, "decision", dict), _field(obj, "notification", dict), obj.get("budget")
        decision, nid = _decision(d)
        if _field(n, "notification_id", str, "notification") != nid:
            raise ValueError("notification.notification_id differs from decision.notification_id")
        return cls(decision, _budget(budget), orjson.dumps(n), orjson.dumps(d))  # orjson writes back the bytes it read


_HEAD, _SPLIT, _BUDGET = b'{"decision":{', b'},"notification":{', b',"budget":'


def _parts(raw: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(decision, notification, budget) bytes of a record laid out as :func:`candidate_bytes`
    writes it, else None. Neither ``},"notification":{`` nor ``,"budget":`` can stand inside a
    JSON string (a quote there is escaped), and the decision holds no object of its own."""
    if not (raw.startswith(_HEAD) and raw.endswith(b"}")):
        return None
    i = raw.find(_SPLIT)
    j = raw.rfind(_BUDGET)
    if i < 0 or j < i:
        return None
    return raw[len(_HEAD) - 1 : i + 1], raw[i + len(_SPLIT) - 1 : j], raw[j + len(_BUDGET) : -1]


def _decision(d: dict[str, Any]) -> tuple[DecisionRow, str]:
    """The candidate's notify decision, checked field by field, and its notification id."""
    nid = _field(d, "notification_id", str, "decision")
    if _field(d, "outcome", str, "decision") != "notify":
        raise ValueError(f"decision.outcome: a candidate is a notify decision, not {d['outcome']!r}")
    transition = _field(d, "transition", str, "decision")
    if transition not in TRANSITIONS:
        raise ValueError(f"decision.transition: one of {', '.join(TRANSITIONS)}, not {transition!r}")
    ts = _field(d, "ts", str, "decision")
    try:
        when = datetime.fromisoformat(ts)
    except ValueError as exc:
        raise ValueError(f"decision.ts: not an ISO time: {ts!r}") from exc
    if when.tzinfo is None:
        raise ValueError(f"decision.ts: a time without its zone: {ts!r}")
    ts_ms = round(when.timestamp() * 1000)
    decision = DecisionRow(
        _field(d, "device_id", str, "decision"), ts_ms, _field(d, "store_id", str, "decision"),
        _field(d, "campaign_id", str, "decision"), transition, "notify",
        _field(d, "reason", str, "decision"), nid, _field(d, "catalog_version", str, "decision"),
    )  # fmt: skip
    return decision, nid


def _budget(budget: Any) -> int | None:
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool)):
        raise ValueError(f"budget: an integer or null, not {budget!r}")
    return budget


def _field(obj: dict[str, Any], name: str, kind: type, within: str = "") -> Any:
    value = obj.get(name)
    if not isinstance(value, kind):
        where = f"{within}.{name}" if within else name
        raise ValueError(f"{where}: missing, or not {'a string' if kind is str else 'an object'}")
    return value
