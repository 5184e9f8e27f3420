"""Every record geopush writes to or reads from a topic: versioned pydantic models, orjson bytes.

This is the one place the wire schemas live. Timestamps are timezone-aware UTC datetimes in
Python and RFC 3339 strings on the wire. Each record carries ``v`` (its schema version).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

T = TypeVar("T", bound="Record")


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise ValueError("timestamp needs a UTC offset")
    return dt.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class Record(BaseModel):
    """Base of topic records: frozen, unknown fields ignored, orjson on the wire."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    def dumps(self) -> bytes:
        """Compact JSON without the unset optional fields, by pydantic's serializer in one pass
        (the same bytes as ``orjson.dumps(model_dump(mode="json"))``, ~3x cheaper)."""
        raw: bytes = self.__pydantic_serializer__.to_json(self, exclude_none=True)
        return raw

    @classmethod
    def loads(cls: type[T], raw: bytes) -> T:
        return cls.model_validate(orjson.loads(raw))


class Device(Record):
    """A phone on the compacted ``devices`` topic (key = device id); a tombstone deletes it."""

    v: Literal[1] = 1
    device_id: str = Field(min_length=1, max_length=128)
    token: str | None = Field(None, description="FCM registration token or Firebase installation id")
    token_kind: Literal["fcm_token", "installation_id"] = "fcm_token"
    locale: str = "en"
    opt_in: bool = Field(False, description="Consent to location-based offers")
    updated_at: UtcDatetime


class DeadLetter(Record):
    """A ping that could not be used, with the original bytes and where it came from."""

    v: Literal[1] = 1
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: str | None = None
    payload: str = Field(description="The original bytes, decoded as UTF-8 with replacement")
    payload_b64: str | None = Field(None, description="Base64 of the original bytes if not UTF-8")
    at: UtcDatetime

    @classmethod
    def of(
        cls, raw: bytes | None, key: bytes | None, reason: str, detail: str,
        topic: str, partition: int, offset: int, at: datetime,
    ) -> DeadLetter:  # fmt: skip
        """The dead letter of a rejected record, keeping its exact bytes."""
        data = raw or b""
        try:
            text, b64 = data.decode("utf-8"), None
        except UnicodeDecodeError:
            text, b64 = data.decode("utf-8", "replace"), base64.b64encode(data).decode()
        k = key.decode("utf-8", "replace") if key is not None else None
        return cls(reason=reason, detail=detail, topic=topic, partition=partition, offset=offset,
                   key=k, payload=text, payload_b64=b64, at=at)  # fmt: skip


Transition = Literal["enter", "dwell", "exit"]
Outcome = Literal["notify", "suppressed"]


class Decision(Record):
    """One answer to "does this transition send this campaign's push?" — with the reason if not."""

    v: Literal[1] = 1
    device_id: str
    ts: UtcDatetime
    store_id: str
    campaign_id: str | None = None
    transition: Transition
    outcome: Outcome
    reason: str
    notification_id: str | None = None
    catalog_version: str


class Notification(Record):
    """A decided push, waiting to be delivered; key = notification id, stable across retries."""

    v: Literal[1] = 1
    notification_id: str
    device_id: str
    campaign_id: str
    store_id: str
    ts: UtcDatetime
    locale: str
    title: str
    body: str
    deeplink: str | None = None
    token: str | None = None
    token_kind: Literal["fcm_token", "installation_id"] = "fcm_token"
    expires_at: UtcDatetime


DeliveryResult = Literal["sent", "failed", "invalid_token", "expired"]


class Delivery(Record):
    """What became of one notification (key = notification id); written once, when final.

    ``sent`` carries FCM's message name; ``failed`` the FCM error code that is not worth a
    retry; ``invalid_token`` means the device's token was tombstoned on ``devices``;
    ``expired`` means the offer's validity ran out before FCM accepted it."""

    v: Literal[1] = 1
    notification_id: str
    device_id: str
    campaign_id: str
    store_id: str
    result: DeliveryResult
    message_name: str | None = None
    error_code: str | None = None
    attempts: int = Field(ge=0)
    decided_at: UtcDatetime
    at: UtcDatetime
