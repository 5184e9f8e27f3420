"""What operators see, on a running worker: /metrics scraped by a real Prometheus, /healthz and
/readyz, the dashboard in real headless Chromium (token required off loopback), `geopush lag`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from kafka import KafkaProducer

from streams.groups import decide_group
from streams.local_kafka import _die_with_parent, free_port
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import REPO, settings_env
from tests.integration.processes import WorkerProcess
from tests.integration.test_decision_stream import replayed

pytestmark = pytest.mark.integration
TOKEN = "s3cret-dashboard-token"


def wait_for(what: str, check: Any, timeout_s: float = 60.0, every_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(every_s)
    raise AssertionError(f"{what}: not true after {timeout_s}s (last: {last!r})")


@pytest.fixture
def running(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, WorkerProcess]]:
    """A worker bound to all interfaces (so the dashboard needs the token), fed simulated traffic."""
    s = settings.model_copy(update={
        "web_host": "0.0.0.0", "web_token": TOKEN, "lag_refresh_s": 1.0, "dashboard_sample_s": 1.0,
    })  # fmt: skip
    ensure_topics(s)
    devices, pings, _, _ = replayed(s, 300, seed=5)
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=10)
    for d in devices:
        producer.send(s.topic_devices, key=d.device_id.encode(), value=d.dumps())
    for p in pings:
        producer.send(s.topic_pings, key=p.device_id.encode(), value=orjson.dumps(p.body))
    producer.send(s.topic_pings, key=b"junk", value=b"{not json")
    producer.flush()
    producer.close()
    worker = WorkerProcess(s, ["-m", "streams.cli", "worker"], tmp_path / "worker.log")
    with worker:
        worker.wait_for_log("Ready", timeout_s=90)
        yield s, worker


def url(s: Settings, path: str) -> str:
    return f"http://127.0.0.1:{s.web_port}{path}"


def test_operators_view_of_a_running_worker(running: tuple[Settings, WorkerProcess], tmp_path: Path) -> None:
    s, _ = running
    assert httpx.get(url(s, "/healthz")).json() == {"status": "ok"}
    ready = wait_for("readyz", lambda: httpx.get(url(s, "/readyz")).status_code == 200)
    assert ready
    checks = httpx.get(url(s, "/readyz")).json()["checks"]
    assert checks == {
        "catalog_loaded": True,
        "partitions_assigned": True,
        "broker_reachable": True,
        "steps_started": True,
    }

    def lag_lines() -> list[str]:
        text = httpx.get(url(s, "/metrics")).text
        return [ln for ln in text.splitlines() if ln.startswith("geopush_consumer_lag{") and s.topic_pings in ln]

    try:
        wait_for("lag of every pings partition", lambda: len(lag_lines()) == s.topic_partitions)
    except AssertionError:
        print(httpx.get(url(s, "/metrics")).text)
        raise
    junk = 'geopush_pings_invalid_total{reason="not_json"} 1.0'
    wait_for("the junk ping counted as invalid", lambda: junk in httpx.get(url(s, "/metrics")).text)
    text = httpx.get(url(s, "/metrics")).text
    assert "geopush_pings_total" in text and "geopush_decisions_total{" in text
    assert "geopush_catalog_fences 20.0" in text and "geopush_ping_to_decision_seconds_bucket" in text
    assert 'geopush_decide_poll_phase_seconds_bucket{le="0.05",phase="outputs"}' in text
    for forbidden in ("sim-", "tok-", "lat=", "lng="):  # no device ids, tokens or coordinates in labels
        assert forbidden not in text

    # the dashboard: token required off loopback
    assert httpx.get(url(s, "/dashboard")).status_code == 401
    assert httpx.get(url(s, "/dashboard/data")).status_code == 401
    assert httpx.get(url(s, "/dashboard"), headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert httpx.get(url(s, "/dashboard/data?token=wrong")).status_code == 401
    for builtin in ("/router/", "/table/", "/graph/", "/stats/"):  # Faust's own pages (table contents) are off
        assert httpx.get(url(s, builtin)).status_code == 404, builtin
    screenshot = dashboard_in_chromium(url(s, f"/dashboard?token={TOKEN}"), tmp_path / "dashboard.png")
    assert screenshot.stat().st_size > 10_000

    prometheus_sees_every_partition(s, tmp_path)


def dashboard_in_chromium(page: str, out: Path) -> Path:
    """Load the page in headless Chromium; wait until the charts hold data; save a screenshot."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    try:
        driver.get(page)

        def chart_state() -> dict[str, Any]:  # read in one script: the page redraws every 2 s
            return dict(
                driver.execute_script("""
                const pts = (sel) => [...document.querySelectorAll(sel)].map(
                    p => [p.dataset.series, (p.getAttribute('points') || '').trim().split(' ').length]);
                return {lag: pts('#lagChart polyline'), rate: pts('#rateChart polyline'),
                        reasons: [...document.querySelectorAll('#reasonChart rect')].map(r => r.dataset.label),
                        status: document.getElementById('status').textContent};
            """)
            )

        def charts_have_data() -> bool:
            state = chart_state()
            pings_lines = [n for name, n in state["lag"] if "pings-" in name and ".dlq" not in name]
            return (len(pings_lines) == 4 and all(n >= 2 for _, n in state["lag"] + state["rate"])
                    and len(state["rate"]) == 3 and bool(state["reasons"]))  # fmt: skip

        try:
            wait_for("dashboard charts", charts_have_data, timeout_s=60)
        except AssertionError:
            print(chart_state())
            raise
        labels = set(chart_state()["reasons"])
        assert labels & {"ok", "cooldown", "drive_by", "uncertain_position", "outside_hours"}, labels
        assert driver.find_element("id", "catalog").text not in ("", "–")
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
    return out


def prometheus_sees_every_partition(s: Settings, tmp_path: Path) -> None:
    """A real Prometheus scrapes the worker; PromQL returns the lag of every pings partition."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is installed by scripts/system-packages.sh"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{REPO / 'config' / 'prometheus' / 'alerts.yml'}']\n"
        "scrape_configs:\n"
        f"  - job_name: geopush\n    static_configs: [{{targets: ['127.0.0.1:{s.web_port}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
    )  # fmt: skip
    try:
        query = f'geopush_consumer_lag{{group="{decide_group(s)}",topic="{s.topic_pings}"}}'

        def partitions() -> set[str]:
            r = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}).json()
            return {res["metric"]["partition"] for res in r["data"]["result"]}

        got = wait_for("PromQL lag per partition", lambda: partitions() == {"0", "1", "2", "3"} and partitions())
        assert got == {"0", "1", "2", "3"}
        rules = httpx.get(f"http://127.0.0.1:{port}/api/v1/rules").json()["data"]["groups"]
        assert {r["name"] for g in rules for r in g["rules"]} >= {"GeopushLagGrowing", "GeopushDeadLetters",
                                                                   "GeopushFcmErrors"}  # fmt: skip
        assert all(r["health"] == "ok" for g in rules for r in g["rules"] if r.get("lastEvaluation"))
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def run_lag(s: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "lag", "--interval", "0.5", *args], cwd=REPO,
        env=settings_env(s), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_geopush_lag_reports_and_gates_on_max_lag(running: tuple[Settings, WorkerProcess]) -> None:
    s, worker = running
    wait_for("worker caught up", lambda: run_lag(s, "--max-lag", "0").returncode == 0, timeout_s=90)
    ok = run_lag(s)
    assert ok.returncode == 0 and s.topic_pings in ok.stdout and "lag" in ok.stdout
    worker.stop()
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    for i in range(50):
        producer.send(s.topic_pings, key=f"d{i}".encode(), value=b"{}")
    producer.flush()
    producer.close()
    behind = run_lag(s, "--max-lag", "10")
    assert behind.returncode == 1 and "lag above 10" in behind.stderr, behind
    assert run_lag(s, "--max-lag", "1000").returncode == 0
