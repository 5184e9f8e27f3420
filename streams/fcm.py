"""The FCM sender: firebase-admin's async batch API (``send_each_async``, 500 a batch).

With ``GEOPUSH_FCM_CREDENTIALS`` (a service-account JSON) and no endpoint override, this talks
to Google. With ``GEOPUSH_FCM_ENDPOINT`` it talks to the same API elsewhere (the project's
emulator): firebase-admin has no public option for that, so the messaging service's FCM URL
is set on the instance. firebase-admin's own HTTP retries (4 on 500/503) are turned off: the
dispatcher owns every retry, so backoff, Retry-After pauses and TTL expiry are one policy.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import firebase_admin
from firebase_admin import credentials, exceptions, messaging

from delivery.dispatch import SendResult
from delivery.outgoing import Outgoing
from streams.settings import Settings

_apps = itertools.count()
log = logging.getLogger("geopush.fcm")


def to_message(o: Outgoing, ttl_s: int) -> messaging.Message:
    """The FCM message: localized text, data, collapse key on both platforms, TTL, high priority."""
    android = messaging.AndroidConfig(collapse_key=o.collapse_key, ttl=timedelta(seconds=ttl_s), priority="high")
    apns = messaging.APNSConfig(
        headers={
            "apns-collapse-id": o.collapse_key,
            "apns-expiration": str(int(o.expires_at.timestamp())),
            "apns-priority": "10",
            "apns-push-type": "alert",
        },
        payload=messaging.APNSPayload(aps=messaging.Aps(sound="default")),
    )
    note = messaging.Notification(title=o.title, body=o.body)
    if o.target_kind == "installation_id":
        return messaging.Message(fid=o.target, notification=note, data=o.data, android=android, apns=apns)
    with warnings.catch_warnings():  # registration tokens are what most apps still hold
        warnings.simplefilter("ignore", DeprecationWarning)
        return messaging.Message(token=o.target, notification=note, data=o.data, android=android, apns=apns)


def error_code(exc: BaseException) -> str:
    """FCM's specific error code when there is one (UNREGISTERED, QUOTA_EXCEEDED, ...), else the canonical one."""
    specific = {
        messaging.UnregisteredError: "UNREGISTERED",
        messaging.QuotaExceededError: "QUOTA_EXCEEDED",
        messaging.SenderIdMismatchError: "SENDER_ID_MISMATCH",
        messaging.ThirdPartyAuthError: "THIRD_PARTY_AUTH_ERROR",
    }
    for kind, code in specific.items():
        if isinstance(exc, kind):
            return code
    if isinstance(exc, exceptions.FirebaseError):
        return str(exc.code)
    return "UNKNOWN"


def retry_after(exc: BaseException) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form), if the answer had one."""
    response = getattr(exc, "http_response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class FcmCredentialsMissing(RuntimeError):
    """No usable Google credential: say which setting to fix."""


def fcm_credential(settings: Settings) -> Any:
    """The service-account credential from ``GEOPUSH_FCM_CREDENTIALS``, or application default ones."""
    if settings.fcm_credentials:
        try:
            return credentials.Certificate(str(settings.fcm_credentials))
        except (OSError, ValueError) as exc:
            raise FcmCredentialsMissing(f"GEOPUSH_FCM_CREDENTIALS={settings.fcm_credentials}: {exc}") from exc
    cred = credentials.ApplicationDefault()
    try:
        cred.get_credential()
    except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError
        raise FcmCredentialsMissing(
            "no FCM credentials: set GEOPUSH_FCM_CREDENTIALS to a service-account JSON (or provide "
            "application default credentials), or GEOPUSH_DELIVER=false to run without delivery"
        ) from exc
    return cred


class FcmSender:
    """Sends batches with firebase-admin; one answer per message, in order."""

    def __init__(self, settings: Settings, observe: Callable[[float, int], None] | None = None) -> None:
        from firebase_admin import _http_client, _retry

        cred = fcm_credential(settings)
        options = {"projectId": settings.fcm_project_id, "httpTimeout": settings.fcm_timeout_s}
        self.app = firebase_admin.initialize_app(cred, options, name=f"geopush-{next(_apps)}")
        self.service = messaging._get_messaging_service(self.app)
        if settings.fcm_endpoint:
            base = settings.fcm_endpoint.rstrip("/")
            self.service._fcm_url = f"{base}/v1/projects/{settings.fcm_project_id}/messages:send"
        self.service._async_client = _http_client.HttpxAsyncClient(
            credential=self.service._credential,
            timeout=settings.fcm_timeout_s,  # type: ignore[arg-type,unused-ignore]
            retry_config=_retry.HttpxRetry(max_retries=0),
        )
        self.observe = observe
        self.concurrency = settings.fcm_concurrency  # httpx slows down past a few dozen requests in flight

    async def send(self, batch: Sequence[tuple[Outgoing, int]]) -> list[SendResult]:
        messages: list[messaging.Message | None] = []
        answers: list[SendResult | None] = []
        for o, ttl in batch:
            try:
                messages.append(to_message(o, ttl))
                answers.append(None)
            except ValueError:  # rejected by firebase-admin's own validation: FCM would too
                messages.append(None)
                answers.append(SendResult(code="INVALID_ARGUMENT"))
        slots = [i for i, m in enumerate(messages) if m is not None]
        for start in range(0, len(slots), self.concurrency):
            part = slots[start : start + self.concurrency]
            replies = await self._send_each([m for i in part if (m := messages[i]) is not None])
            for i, reply in zip(part, replies, strict=True):
                answers[i] = reply
        return [a if a is not None else SendResult(code="INVALID_ARGUMENT") for a in answers]

    async def _send_each(self, todo: list[messaging.Message]) -> list[SendResult]:
        """One ``send_each_async`` call; a batch that never left (e.g. no access token) is retryable."""
        started = time.perf_counter()
        try:
            response = await messaging.send_each_async(todo, app=self.app)
        except exceptions.FirebaseError as exc:
            log.warning("FCM batch of %d not sent, will retry: %s", len(todo), exc)
            return [SendResult(code="UNAVAILABLE")] * len(todo)
        if self.observe is not None:
            self.observe(time.perf_counter() - started, len(todo))
        return [
            SendResult(message_name=r.message_id)
            if r.success
            else SendResult(code=error_code(r.exception), retry_after_s=retry_after(r.exception))
            for r in response.responses
        ]

    async def close(self) -> None:
        await self.service._async_client.aclose()
        # delete_app closes the service with asyncio.run(): it needs a thread without a running loop
        await asyncio.to_thread(firebase_admin.delete_app, self.app)
