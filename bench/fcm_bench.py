"""FCM send benchmark: geopush's sender (firebase-admin ``send_each_async``) against the emulator.

    python -m bench.fcm_bench [--messages 5000] [--out bench/results/fcm.md]

The emulator runs in its own process (as FCM would be remote). Side by side in one run:
(a) the emulator's ceiling, measured with a plain aiohttp client posting the same JSON, and
(b) the full send path (Dispatcher -> FcmSender -> firebase-admin -> httpx) at several
concurrency settings. Reports messages/s and the ratio (b)/(a).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from delivery.dispatch import Dispatcher
from delivery.outgoing import Outgoing
from delivery.rate import TokenBucket
from streams.fcm import FcmSender, to_message
from streams.local_kafka import free_port
from streams.settings import load_settings

PROJECT = "geopush-bench"


def items(n: int) -> list[Outgoing]:
    exp = datetime.now(UTC) + timedelta(hours=1)
    return [
        Outgoing(f"{i:064x}", f"tok-{i}", "fcm_token", "ようこそ 新宿店へ", "本日限定 ランチ10%オフ",
                 {"notification_id": f"{i:064x}", "campaign_id": "lunch", "store_id": "shinjuku"}, f"{i:064x}", exp)
        for i in range(n)
    ]  # fmt: skip


async def ceiling(base: str, creds: Path, n: int, conc: int) -> float:
    """Plain aiohttp posts of the same message bodies (with a valid access token)."""
    from firebase_admin import messaging
    from google.oauth2 import service_account

    cred = service_account.Credentials.from_service_account_file(
        str(creds), scopes=["https://www.googleapis.com/auth/firebase.messaging"]
    )
    await asyncio.to_thread(
        cred.refresh, __import__("google.auth.transport.requests").auth.transport.requests.Request()
    )
    headers = {"Authorization": f"Bearer {cred.token}"}
    bodies = [{"message": messaging._MessagingService.encode_message(to_message(o, 3600))} for o in items(n)]
    url = f"{base}/v1/projects/{PROJECT}/messages:send"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as session:

        async def one(body: dict[str, object]) -> None:
            async with session.post(url, json=body, headers=headers) as r:
                await r.read()
                assert r.status == 200

        started = time.perf_counter()
        for i in range(0, n, conc):
            await asyncio.gather(*[one(b) for b in bodies[i : i + conc]])
        return n / (time.perf_counter() - started)


async def geopush(base: str, creds: Path, n: int, conc: int) -> float:
    s = load_settings({}, fcm_project_id=PROJECT, fcm_credentials=creds, fcm_endpoint=base, fcm_concurrency=conc)
    sender = FcmSender(s)
    d = Dispatcher(sender, lambda: datetime.now(UTC), asyncio.sleep, TokenBucket(1e9, 1e9, time.monotonic),
                   rng=random.Random(1), batch_max=conc)  # fmt: skip
    await d.deliver(items(50))  # warm-up: access token, connections
    started = time.perf_counter()
    finals = await d.deliver(items(n))
    rate = n / (time.perf_counter() - started)
    assert all(f.result == "sent" for f in finals) and len(finals) == n
    await sender.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--out", type=Path, default=Path("bench/results/fcm.md"))
    args = ap.parse_args()
    port = free_port()
    creds = Path(tempfile.mkdtemp()) / "sa.json"
    env = {**os.environ, "GEOPUSH_FCM_PROJECT_ID": PROJECT}
    emu = subprocess.Popen([sys.executable, "-m", "streams.cli", "fcm-emulator", "--port", str(port),
                            "--credentials-out", str(creds)], env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        while not creds.exists():
            time.sleep(0.1)
        time.sleep(0.5)
        base = f"http://127.0.0.1:{port}"
        rows = []
        for conc in (10, 25, 50, 100):
            top = asyncio.run(ceiling(base, creds, args.messages, conc))
            ours = asyncio.run(geopush(base, creds, args.messages, conc))
            rows.append((conc, top, ours))
            print(
                f"concurrency {conc:>3}: emulator ceiling {top:8.0f}/s  geopush sender {ours:7.0f}/s  ratio {ours / top:.2f}"
            )
    finally:
        emu.terminate()
        emu.wait(10)
    lines = [
        f"# FCM send benchmark — {datetime.now(UTC):%Y-%m-%d}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}. Command: `python -m bench.fcm_bench --messages {args.messages}`.",
        "",
        "The emulator runs in its own process. *Ceiling*: a plain aiohttp client posting the same",
        "message JSON. *geopush*: Dispatcher → FcmSender → firebase-admin `send_each_async` → httpx,",
        "with `GEOPUSH_FCM_CONCURRENCY` requests in flight.",
        "",
        "| concurrency | emulator ceiling (msg/s) | geopush sender (msg/s) | ratio |",
        "|---:|---:|---:|---:|",
        *[f"| {c} | {t:,.0f} | {o:,.0f} | {o / t:.2f} |" for c, t, o in rows],
        "",
    ]
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
