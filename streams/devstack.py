"""``geopush dev`` (what ``make run`` runs): broker, topics, worker and phones, all local.

Everything it starts dies with it: children get SIGTERM when this process ends (Linux
parent-death signal), and Ctrl-C stops them in order — phones, worker, broker.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from streams.local_kafka import LocalKafka, LocalKafkaError, free_port
from streams.settings import Settings, environ_for
from streams.topics import ensure_topics


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    from streams.local_kafka import _die_with_parent

    fh = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", *args], env=env, stdout=fh, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent, start_new_session=True,
    )  # fmt: skip
    fh.close()
    return proc


def _stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def run_dev(base: Settings, phones: int, rate: float) -> int:
    """Run the stack until Ctrl-C; return the exit code."""
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # we say what matters ourselves
    data = base.data_dir / "dev"
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    broker = LocalKafka(data_dir=data / "kafka", kafka_home=base.kafka_home, version=base.kafka_version,
                        heap_mb=base.kafka_heap_mb)  # fmt: skip
    worker = sim = emulator = None
    stopping = False

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        print(f"starting Apache Kafka {base.kafka_version} (KRaft) ...", flush=True)
        t = time.monotonic()
        broker.start()
        print(f"  broker     {broker.bootstrap}  up in {time.monotonic() - t:.1f}s  (log {broker.log_path})")
        web_port = base.web_port if _port_free(base.web_port) else free_port()
        s = base.model_copy(update={"kafka_bootstrap": broker.bootstrap, "web_port": web_port,
                                    "data_dir": data / "worker"})  # fmt: skip
        ensure_topics(s)
        if base.fcm_credentials is None and base.fcm_endpoint is None:
            emulator, s = _start_emulator(s, data / "fcm", logs / "fcm-emulator.log")
            print(f"  FCM        emulator {s.fcm_endpoint}  (log {logs / 'fcm-emulator.log'})")
        env = environ_for(s)
        worker = _spawn(["worker"], env, logs / "worker.log")
        print(f"  worker     pid {worker.pid}  web http://{s.web_host}:{web_port}/  (log {logs / 'worker.log'})")
        time.sleep(5)
        sim = _spawn(["simulate", "--devices", str(phones), "--rate", str(rate), "--waves", "0"], env,
                     logs / "phones.log")  # fmt: skip
        print(f"  phones     pid {sim.pid}  {phones} per wave at {rate:.0f} pings/s  (log {logs / 'phones.log'})")
        print(f"  catalog    {s.catalog_path}")
        print("decisions so far (Ctrl-C stops everything):", flush=True)
        _watch(s, worker, sim)
    except KeyboardInterrupt:
        stopping = True
    except LocalKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        print("\nstopping phones, worker, FCM emulator, broker ...", flush=True)
        _stop(sim)
        _stop(worker, 40.0)
        _stop(emulator)
        broker.stop()
        print("stopped; nothing left running.")
    return 0 if stopping else 1


def _start_emulator(s: Settings, home: Path, log: Path) -> tuple[subprocess.Popen[bytes], Settings]:
    """The FCM emulator as a child process; settings pointing the worker at it."""
    port = free_port()
    creds = home / "service-account.json"
    creds.unlink(missing_ok=True)
    proc = _spawn(["fcm-emulator", "--port", str(port), "--credentials-out", str(creds)], environ_for(s), log)
    deadline = time.monotonic() + 30
    while not creds.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the FCM emulator did not start; see {log}")
        time.sleep(0.1)
    return proc, s.model_copy(update={"fcm_credentials": creds, "fcm_endpoint": f"http://127.0.0.1:{port}"})


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock, contextlib.suppress(OSError):
        sock.bind(("127.0.0.1", port))
        return True
    return False


def _watch(s: Settings, worker: subprocess.Popen[bytes], sim: subprocess.Popen[bytes]) -> None:
    """Print a line every 5 s: decisions by outcome and reason, read from the decisions topic."""
    import orjson
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(s.topic_decisions, s.topic_deliveries, bootstrap_servers=s.kafka_bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=500)  # fmt: skip
    counts: Counter[str] = Counter()
    pushes: Counter[str] = Counter()
    last = time.monotonic()
    try:
        while True:
            for msg in consumer:
                d = orjson.loads(msg.value)
                if msg.topic == s.topic_deliveries:
                    pushes[d["result"]] += 1
                else:
                    counts["notify" if d["outcome"] == "notify" else d["reason"]] += 1
            if worker.poll() is not None:
                raise SystemExit(f"worker exited with {worker.returncode}; see its log")
            if time.monotonic() - last >= 5:
                last = time.monotonic()
                top = ", ".join(f"{k} {v}" for k, v in counts.most_common(8))
                sent = ", ".join(f"{k} {v}" for k, v in pushes.most_common())
                print(f"  {sum(counts.values()):>7} decisions: {top}  | pushes: {sent or 'none yet'}", flush=True)
    finally:
        consumer.close()
