"""An FCM HTTP v1 emulator on loopback, for tests and ``make run`` (no official one exists).

It speaks the two endpoints firebase-admin uses with a service-account credential: the OAuth2
token endpoint (a JWT-bearer grant, signature checked against the throwaway key it generated)
and ``POST /v1/projects/{project}/messages:send``. Messages are validated the way FCM does
(one target, string data, reserved keys, 4 KiB payload, TTL format and range, APNs headers),
every accepted one is recorded, and failures can be injected per token or by rate:
429 with Retry-After, 500, 503, UNREGISTERED, INVALID_ARGUMENT, ...

Admin API (JSON): ``GET /emulator/messages[?target=&collapse_key=]``, ``DELETE /emulator/messages``,
``POST /emulator/faults`` (a rule, see :class:`Fault`), ``DELETE /emulator/faults``,
``GET /emulator/stats``.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

MAX_PAYLOAD_BYTES = 4096
MAX_TTL_S = 2_419_200
TTL_RE = re.compile(r"^\d+(\.\d{1,9})?s$")
MESSAGE_FIELDS = {"name", "data", "notification", "android", "webpush", "apns", "fcm_options",
                  "token", "fid", "topic", "condition"}  # fmt: skip
TARGETS = ("token", "fid", "topic", "condition")
RESERVED_DATA = {"from", "notification", "message_type"}
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

#: error code -> (HTTP status, canonical status)
ERRORS: dict[str, tuple[int, str]] = {
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "UNREGISTERED": (404, "NOT_FOUND"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
    "INTERNAL": (500, "INTERNAL"),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED"),
}


def error_response(code: str, message: str, retry_after_s: float | None = None) -> web.Response:
    """An error body shaped like Google's, with the FcmError detail firebase-admin maps to a type."""
    status, canonical = ERRORS[code]
    body = {"error": {"code": status, "message": message, "status": canonical,
                      "details": [{"@type": FCM_ERROR, "errorCode": code}]}}  # fmt: skip
    headers = {"Retry-After": str(int(retry_after_s))} if retry_after_s is not None else None
    return web.json_response(body, status=status, headers=headers)


@dataclass
class Fault:
    """An injected failure: for ``target`` (or every target), ``times`` times or for ``for_s``
    seconds (or until cleared), with probability ``rate``."""

    error: str
    target: str | None = None
    times: int | None = None
    rate: float = 1.0
    for_s: float | None = None
    retry_after_s: float | None = None
    since: float = field(default_factory=time.monotonic)

    def applies(self, target: str, rng: random.Random) -> bool:
        if self.target is not None and self.target != target:
            return False
        if self.times is not None and self.times <= 0:
            return False
        if self.for_s is not None and time.monotonic() - self.since > self.for_s:
            return False
        if self.rate < 1.0 and rng.random() >= self.rate:
            return False
        if self.times is not None:
            self.times -= 1
        return True


def validate(message: Any) -> str | None:
    """Why FCM would reject ``message`` with INVALID_ARGUMENT, or None if it is valid."""
    if not isinstance(message, dict):
        return "message must be an object"
    unknown = sorted(set(message) - MESSAGE_FIELDS)
    if unknown:
        return f"Invalid JSON payload received. Unknown name {unknown[0]!r} at 'message'"
    targets = [t for t in TARGETS if t in message]
    if len(targets) != 1:
        return f"exactly one of token, fid, topic, condition is required (got {targets or 'none'})"
    target = message[targets[0]]
    if not isinstance(target, str) or not target:
        return f"message.{targets[0]} must be a non-empty string"
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        return "message.data must map strings to strings"
    for key in data:
        if key in RESERVED_DATA or key.startswith(("google.", "gcm.")):
            return f"message.data key {key!r} is reserved"
    size = len(json.dumps(data).encode()) + len(json.dumps(message.get("notification", {})).encode())
    if size > MAX_PAYLOAD_BYTES:
        return f"Message is too big: payload {size} bytes > {MAX_PAYLOAD_BYTES}"
    android = message.get("android", {})
    if "ttl" in android:
        ttl = android["ttl"]
        if not isinstance(ttl, str) or not TTL_RE.match(ttl):
            return f"message.android.ttl {ttl!r} is not a duration like '3600s'"
        if float(ttl[:-1]) > MAX_TTL_S:
            return f"message.android.ttl {ttl} exceeds 28 days"
    if android.get("priority", "normal") not in ("normal", "high"):
        return f"message.android.priority {android.get('priority')!r} is not normal or high"
    headers = message.get("apns", {}).get("headers", {})
    if not all(isinstance(v, str) for v in headers.values()):
        return "message.apns.headers values must be strings"
    if len(headers.get("apns-collapse-id", "").encode()) > 64:
        return "apns-collapse-id is longer than 64 bytes"
    if headers.get("apns-priority", "10") not in ("5", "10", "1"):
        return f"apns-priority {headers['apns-priority']!r} is not 1, 5 or 10"
    return None


class FcmEmulator:
    """The emulator's state and aiohttp application."""

    def __init__(self, project_id: str, public_key_pem: bytes, client_email: str, token_uri: str) -> None:
        self.project_id = project_id
        self.public_key_pem = public_key_pem
        self.client_email = client_email
        self.token_uri = token_uri
        self.access_tokens: set[str] = set()
        self.messages: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.stats: dict[str, int] = {"requests": 0, "accepted": 0}
        self.rng = random.Random()
        self.serial = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/token", self.token)
        app.router.add_post("/v1/projects/{project}/messages:send", self.send)
        app.router.add_get("/emulator/messages", self.list_messages)
        app.router.add_delete("/emulator/messages", self.clear_messages)
        app.router.add_post("/emulator/faults", self.add_fault)
        app.router.add_delete("/emulator/faults", self.clear_faults)
        app.router.add_get("/emulator/stats", self.get_stats)
        return app

    async def token(self, request: web.Request) -> web.Response:
        """OAuth2 JWT-bearer grant: verify the assertion, hand out an opaque access token."""
        from google.auth import jwt

        form = await request.post()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        try:
            audiences = [self.token_uri, GOOGLE_TOKEN_URI]  # google-auth signs for Google's URI whatever token_uri says
            claims = jwt.decode(str(form.get("assertion", "")), certs=self.public_key_pem, audience=audiences)
        except ValueError as exc:
            return web.json_response({"error": "invalid_grant", "error_description": str(exc)}, status=400)
        if claims.get("iss") != self.client_email:
            return web.json_response({"error": "invalid_grant", "error_description": "unknown issuer"}, status=400)
        access = "emu-" + secrets.token_urlsafe(24)
        self.access_tokens.add(access)
        return web.json_response({"access_token": access, "expires_in": 3600, "token_type": "Bearer"})

    async def send(self, request: web.Request) -> web.Response:
        self.stats["requests"] += 1
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.access_tokens:
            body = {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                              "status": "UNAUTHENTICATED"}}  # fmt: skip
            return web.json_response(body, status=401)
        if request.match_info["project"] != self.project_id:
            return error_response("SENDER_ID_MISMATCH", f"project {request.match_info['project']!r} is not this sender")
        try:
            payload = await request.json()
        except ValueError:
            return error_response("INVALID_ARGUMENT", "Invalid JSON payload received.")
        message = payload.get("message") if isinstance(payload, dict) else None
        problem = validate(message)
        if problem is not None:
            return self._reject("INVALID_ARGUMENT", problem)
        assert isinstance(message, dict)
        target = next(message[t] for t in TARGETS if t in message)
        for fault in self.faults:
            if fault.applies(target, self.rng):
                return self._reject(fault.error, f"injected {fault.error}", fault.retry_after_s)
        self.serial += 1
        name = f"projects/{self.project_id}/messages/{self.serial}"
        if not payload.get("validate_only"):
            self.stats["accepted"] += 1
            self.messages.append({
                "name": name, "target": target, "received_at": datetime.now(UTC).isoformat(timespec="microseconds"),
                "collapse_key": message.get("android", {}).get("collapse_key"), "message": message,
            })  # fmt: skip
        return web.json_response({"name": name})

    def _reject(self, code: str, message: str, retry_after_s: float | None = None) -> web.Response:
        self.stats[code] = self.stats.get(code, 0) + 1
        if code == "QUOTA_EXCEEDED" and retry_after_s is None:
            retry_after_s = 1
        return error_response(code, message, retry_after_s)

    async def list_messages(self, request: web.Request) -> web.Response:
        found = [
            m for m in self.messages
            if all(request.query.get(k) in (None, m.get(k)) for k in ("target", "collapse_key"))
        ]  # fmt: skip
        return web.json_response(found)

    async def clear_messages(self, request: web.Request) -> web.Response:
        self.messages.clear()
        return web.json_response({"cleared": True})

    async def add_fault(self, request: web.Request) -> web.Response:
        spec = await request.json()
        if not isinstance(spec, dict) or spec.get("error") not in ERRORS:
            return web.json_response({"error": f"fault.error must be one of {sorted(ERRORS)}"}, status=400)
        allowed = {"error", "target", "times", "rate", "for_s", "retry_after_s"}
        if set(spec) - allowed:
            return web.json_response({"error": f"unknown fault fields {sorted(set(spec) - allowed)}"}, status=400)
        self.faults.append(Fault(**spec))
        return web.json_response({"faults": len(self.faults)})

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return web.json_response({"faults": 0})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response({**self.stats, "recorded": len(self.messages)})


def new_service_account(project_id: str, token_uri: str) -> tuple[dict[str, str], bytes]:
    """A throwaway service-account JSON (fresh RSA key) whose token URI is the emulator; + public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    email = f"geopush-emulator@{project_id}.iam.gserviceaccount.com"
    account = {
        "type": "service_account", "project_id": project_id, "private_key_id": secrets.token_hex(20),
        "private_key": private_pem, "client_email": email, "client_id": str(secrets.randbits(63)),
        "token_uri": token_uri,
    }  # fmt: skip
    return account, public_pem


@dataclass
class RunningEmulator:
    """Where a started emulator listens and the credential file that reaches it."""

    base_url: str
    credentials: Path
    emulator: FcmEmulator


async def start_emulator(
    project_id: str, credentials_out: Path, host: str = "127.0.0.1", port: int = 0, public_url: str | None = None
) -> tuple[RunningEmulator, web.AppRunner]:
    """Start on ``host:port`` (0 = any free port) and write the matching service-account file.

    ``public_url`` is how clients reach it when that is not ``http://host:port`` (containers)."""
    from streams.local_kafka import free_port

    port = port or free_port()
    base = (public_url or f"http://{host}:{port}").rstrip("/")
    account, public_pem = new_service_account(project_id, f"{base}/token")
    emulator = FcmEmulator(project_id, public_pem, account["client_email"], account["token_uri"])
    runner = web.AppRunner(emulator.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    credentials_out.parent.mkdir(parents=True, exist_ok=True)
    credentials_out.write_text(json.dumps(account, indent=2))
    credentials_out.chmod(0o600)
    return RunningEmulator(base, credentials_out, emulator), runner


class EmulatorThread:
    """The emulator on its own event loop in a background thread (test fixtures)."""

    def __init__(self, project_id: str, credentials_out: Path) -> None:
        self.project_id = project_id
        self.credentials_out = credentials_out
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fcm-emulator", daemon=True)
        self.running: RunningEmulator | None = None
        self.runner: web.AppRunner | None = None

    def start(self) -> RunningEmulator:
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(start_emulator(self.project_id, self.credentials_out), self.loop)
        self.running, self.runner = future.result(30)
        return self.running

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def serve_forever(
    project_id: str, credentials_out: Path, host: str, port: int, public_url: str | None = None
) -> None:
    """``geopush fcm-emulator``: run until cancelled, printing where it listens."""
    running, runner = await start_emulator(project_id, credentials_out, host, port, public_url)
    print(f"FCM emulator listening on {running.base_url} (project {project_id}); credentials: {credentials_out}",
          flush=True)  # fmt: skip
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
