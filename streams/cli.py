"""``geopush``: one command for marketers and operators. Run ``geopush --help``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import NoReturn

import typer

from geofences.load import CatalogInvalid
from streams.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    help="geopush: store-offer push notifications from location pings.\n\n"
    "Settings come from GEOPUSH_* environment variables (see config/geopush.env.example).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(help="A local Apache Kafka broker for development (not for production).")
topics_app = typer.Typer(help="Kafka topics geopush owns.")
catalog_app = typer.Typer(help="Stores, geofences and campaigns (the marketers' YAML).")
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(catalog_app, name="catalog")


def settings_or_exit() -> Settings:
    """Load settings, or print what is wrong with them and exit 2."""
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def reject(exc: CatalogInvalid, outcome: str) -> NoReturn:
    """Print every catalog problem (file:line:column: field: message) and exit 1."""
    for problem in exc.problems:
        typer.echo(str(problem), err=True)
    typer.echo(f"{len(exc.problems)} problem(s); {outcome}.", err=True)
    raise typer.Exit(1)


def local_broker_dir(settings: Settings) -> Path:
    return settings.data_dir / "kafka"


@kafka_app.command("fetch")
def kafka_fetch() -> None:
    """Download the Apache Kafka jars from Maven Central into the cache (once)."""
    from streams.local_kafka import LocalKafkaError, ensure_jars

    s = settings_or_exit()
    try:
        libs = ensure_jars(s.kafka_home, s.kafka_version)
    except LocalKafkaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Apache Kafka {s.kafka_version} jars in {libs}")


@kafka_app.command("up")
def kafka_up(
    port: int = typer.Option(9092, help="Client port on 127.0.0.1 (0 picks a free one)."),
) -> None:
    """Start the local broker in the background and wait until it answers."""
    from streams.local_kafka import LocalKafka, LocalKafkaError, read_state, read_state_pid

    s = settings_or_exit()
    data = local_broker_dir(s)
    if read_state_pid(data) is not None:
        typer.echo(f"already running: {read_state(data)}")
        return
    broker = LocalKafka(
        data_dir=data,
        kafka_home=s.kafka_home,
        version=s.kafka_version,
        port=port,
        heap_mb=s.kafka_heap_mb,
        tie_to_parent=False,
    )
    try:
        broker.start()
    except LocalKafkaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Kafka {s.kafka_version} up on {broker.bootstrap} (data {data})")
    typer.echo(f"export GEOPUSH_KAFKA_BOOTSTRAP={broker.bootstrap}")


@kafka_app.command("down")
def kafka_down() -> None:
    """Stop the local broker started by ``geopush kafka up``."""
    from streams.local_kafka import read_state_pid, stop_pid

    s = settings_or_exit()
    data = local_broker_dir(s)
    pid = read_state_pid(data)
    if pid is None:
        typer.echo("not running")
        return
    stop_pid(pid)
    (data / "broker.json").unlink(missing_ok=True)
    typer.echo(f"stopped broker pid {pid}")


@kafka_app.command("status")
def kafka_status() -> None:
    """Say whether the local broker runs and answers; exit 1 when it does not."""
    from streams.local_kafka import metadata_ok, read_state, read_state_pid

    s = settings_or_exit()
    data = local_broker_dir(s)
    state = read_state(data)
    if state is None or read_state_pid(data) is None:
        typer.echo("not running")
        raise typer.Exit(1)
    bootstrap = str(state["bootstrap"])
    try:
        ok = metadata_ok(bootstrap)
    except Exception as exc:
        typer.echo(f"pid {state['pid']} on {bootstrap}: not answering ({exc})")
        raise typer.Exit(1) from None
    typer.echo(f"pid {state['pid']} on {bootstrap}: {'answering' if ok else 'no brokers'}")


@topics_app.command("create")
def topics_create() -> None:
    """Create the topics geopush needs (pings, dlq, devices, decisions, ...) if missing."""
    from streams.topics import ensure_topics, topic_specs

    s = settings_or_exit()
    created = ensure_topics(s)
    for spec in topic_specs(s):
        mark = "created" if spec.name in created else "exists"
        kind = "compacted" if spec.compacted else "delete"
        typer.echo(f"{spec.name:<20} {spec.partitions:>3} partitions  {kind:<9} {mark}")


@catalog_app.command("validate")
def catalog_validate(
    paths: list[Path] = typer.Argument(..., help="Catalog YAML files or directories."),
) -> None:
    """Check a catalog; print a summary (exit 0) or every problem with file:line:column (exit 1)."""
    import time

    from geofences.index import FenceIndex
    from geofences.load import load_catalog
    from streams.heap import collections_paused

    try:
        with collections_paused():
            cat = load_catalog(paths)
    except CatalogInvalid as exc:
        reject(exc, "the catalog was not accepted")
    t = time.perf_counter()
    with collections_paused():
        index = FenceIndex(cat.fences)
    build_ms = (time.perf_counter() - t) * 1000
    kinds = {k: sum(1 for f in cat.fences if f.kind == k) for k in ("circle", "polygon")}
    typer.echo(f"catalog {cat.version}: OK ({len(cat.sources)} file(s))")
    typer.echo(f"  stores     {len(cat.stores)} ({kinds['circle']} circles, {kinds['polygon']} polygons)")
    typer.echo(f"  campaigns  {len(cat.campaigns)}")
    for c in cat.campaigns:
        trig = f"{c.trigger} {c.dwell_seconds}s" if c.trigger == "dwell" else c.trigger
        typer.echo(f"    {c.id:<24} {trig:<10} {len(cat.campaign_stores(c)):>4} stores  "
                   f"{c.active.from_}..{c.active.until}  locales {','.join(c.offer.text)}")  # fmt: skip
    typer.echo(f"  index      {index.cell_count()} cells at resolutions "
               f"{','.join(str(lv.res) for lv in index.levels)}, {index.nbytes() / 2**20:.1f} MiB, "
               f"built in {build_ms:.0f} ms")  # fmt: skip


@catalog_app.command("apply")
def catalog_apply(
    paths: list[Path] = typer.Argument(..., help="Catalog YAML files or directories."),
) -> None:
    """Validate, then publish the catalog to every running worker (no restart, no lost pings)."""
    from streams.catalog_feed import publish

    s = settings_or_exit()
    try:
        cat = publish(s, paths)
    except CatalogInvalid as exc:
        reject(exc, "nothing was published")
    typer.echo(f"published catalog {cat.version} ({len(cat.stores)} stores, {len(cat.campaigns)} campaigns) "
               f"to {s.topic_catalog}")  # fmt: skip


@app.command("replay")
def replay_cmd(
    catalog: list[Path] = typer.Option(..., "--catalog", help="Catalog YAML file or directory."),
    devices: Path = typer.Option(..., "--devices", help="Device records, one JSON object per line."),
    pings: Path = typer.Option(..., "--pings", help="Pings, one JSON object per line (as on the topic)."),
    out: Path | None = typer.Option(None, "--out", help="Write one decision per line here."),
) -> None:
    """Run the stream's decision code over files: "what would this campaign have sent?"."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from decisions.engine import Engine
    from decisions.replay import read_devices, replay
    from geofences.load import load_catalog

    try:
        cat = load_catalog(catalog)
    except CatalogInvalid as exc:
        reject(exc, "nothing was replayed")
    engine = Engine.for_catalog(cat)
    book = read_devices(devices)
    total = sum(1 for _ in pings.open("rb"))
    sink = out.open("wb") if out else None
    try:
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), transient=True, disable=total < 50_000) as bar:  # fmt: skip
            task = bar.add_task("replaying", total=total)
            with pings.open("rb") as fh:
                summary = replay(engine, book, fh, sink, progress=lambda n: bar.advance(task, n))
    finally:
        if sink:
            sink.close()
    for line in summary.lines():
        typer.echo(line)


@app.command("simulate")
def simulate_cmd(
    devices: int = typer.Option(200, help="How many simulated phones per wave."),
    seed: int = typer.Option(1, help="Random seed (same seed, same traces)."),
    rate: float = typer.Option(0.0, help="Pings per second to produce (0: as fast as possible)."),
    waves: int = typer.Option(1, help="How many waves of phones (0: until stopped)."),
    pings_out: Path | None = typer.Option(None, "--pings-out", help="Write pings here instead of Kafka."),
    devices_out: Path | None = typer.Option(None, "--devices-out", help="Write device records here."),
    start: str | None = typer.Option(None, help="Start time (RFC 3339); default now."),
) -> None:
    """Simulated phones walking, dwelling, driving past the catalog's stores."""
    from datetime import UTC, datetime

    import orjson

    from geofences.load import load_catalog
    from streams.phones import simulate

    s = settings_or_exit()
    cat = load_catalog([s.catalog_path])
    start_ms = int((datetime.fromisoformat(start) if start else datetime.now(UTC)).timestamp() * 1000)
    if pings_out or devices_out:
        records, pings = simulate(cat, devices, start_ms, seed)
        if devices_out:
            devices_out.write_bytes(b"".join(r.dumps() + b"\n" for r in records))
        if pings_out:
            pings_out.write_bytes(b"".join(orjson.dumps(p.body) + b"\n" for p in pings))
        typer.echo(f"{len(records)} devices, {len(pings)} pings written")
        return
    from streams.phones import produce_waves

    produce_waves(s, cat, devices, seed, rate, waves, start_ms, echo=typer.echo)


def _tcp_open(hostport: str, timeout_s: float = 3.0) -> bool:
    import socket

    host, _, port = hostport.strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


@app.command("lag")
def lag_cmd(
    group: list[str] = typer.Option(
        None,
        "--group",
        "-g",
        help="Consumer group (repeatable). Default: the worker's groups (decide, budget, delivery).",
    ),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh in place until Ctrl-C."),
    interval: float = typer.Option(2.0, help="Seconds between readings (the trend is measured over it)."),
    max_lag: int | None = typer.Option(None, "--max-lag", help="Exit 1 when any partition lags by more than N."),
) -> None:
    """Consumer lag per group, topic and partition: committed, end, lag and whether it grows.

    For cron and scripts: `geopush lag --max-lag 10000` exits 1 when exceeded, 2 when the
    broker cannot be reached."""
    import time

    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError
    from rich.console import Console
    from rich.live import Live

    from streams.groups import worker_groups
    from streams.lag import PartitionLag, group_lag, lag_rates, lag_table, over_limit

    s = settings_or_exit()
    groups = group or sorted(worker_groups(s))
    console = Console() if sys.stdout.isatty() else Console(width=200)  # scripts get whole names
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # the one-line error below says it
    if not any(_tcp_open(hostport) for hostport in s.kafka_bootstrap.split(",")):
        typer.echo(f"error: cannot reach Kafka at {s.kafka_bootstrap} (connection refused or timed out)", err=True)
        raise typer.Exit(2)
    try:
        admin = KafkaAdminClient(**s.kafka_client_kwargs(), request_timeout_ms=10_000)
    except KafkaError as exc:
        typer.echo(f"error: cannot reach Kafka at {s.kafka_bootstrap}: {exc!r}", err=True)
        raise typer.Exit(2) from None

    def read() -> list[PartitionLag]:
        try:
            return [row for g in groups for row in group_lag(admin, g)]
        except KafkaError as exc:
            typer.echo(f"error: reading offsets from {s.kafka_bootstrap} failed: {exc!r}", err=True)
            raise typer.Exit(2) from None

    try:
        before, t0 = read(), time.monotonic()
        if not before:
            typer.echo(f"no committed offsets for group(s) {', '.join(groups)} on {s.kafka_bootstrap}")
        time.sleep(interval)
        rows, t1 = read(), time.monotonic()
        if watch:
            with Live(lag_table(rows, lag_rates(before, rows, t1 - t0)), console=console, auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    before, t0 = rows, t1
                    rows, t1 = read(), time.monotonic()
                    live.update(lag_table(rows, lag_rates(before, rows, t1 - t0)), refresh=True)
        console.print(lag_table(rows, lag_rates(before, rows, t1 - t0)))
    finally:
        admin.close()
    if max_lag is not None and (bad := over_limit(rows, max_lag)):
        typer.echo(f"lag above {max_lag} on {len(bad)} partition(s), worst {max(r.lag for r in bad):,}", err=True)
        raise typer.Exit(1)


@app.command("worker")
def worker() -> None:
    """Run a stream worker: pings in, decisions and notifications out."""
    from streams.app import create_app
    from streams.fcm import FcmCredentialsMissing
    from streams.pipeline import pipeline_registrars
    from streams.topics import ensure_topics
    from streams.worker import run_worker

    s = settings_or_exit()
    ensure_topics(s)  # idempotent: every topic, the state changelogs included
    try:
        app_ = create_app(s, pipeline_registrars())
    except FcmCredentialsMissing as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    run_worker(app_, s)


@app.command("fcm-emulator")
def fcm_emulator(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(0, help="Port (0 = any free port)."),
    public_url: str = typer.Option("", help="URL clients use to reach it, if not http://HOST:PORT (containers)."),
    credentials_out: Path = typer.Option(
        Path("var/fcm-emulator/service-account.json"), help="Where to write the service-account JSON that reaches it."
    ),
) -> None:
    """Run the local FCM emulator (HTTP v1 messages:send + OAuth2 token endpoint) for tests and dev.

    Point a worker at it with GEOPUSH_FCM_ENDPOINT=<the printed URL> and
    GEOPUSH_FCM_CREDENTIALS=<credentials-out>. It records every accepted message
    (GET /emulator/messages) and injects failures on demand (POST /emulator/faults)."""
    import asyncio

    from streams.fcm_emulator import serve_forever

    s = settings_or_exit()
    asyncio.run(serve_forever(s.fcm_project_id, credentials_out, host, port, public_url or None))


@app.command("dev")
def dev(
    phones: int = typer.Option(300, help="Simulated phones per wave."),
    rate: float = typer.Option(200.0, help="Simulated pings per second."),
) -> None:
    """The whole local stack: a Kafka broker, the topics, a worker and simulated phones.

    Prints what runs where and a running count of decisions; Ctrl-C stops everything."""
    from streams.devstack import run_dev

    raise typer.Exit(run_dev(settings_or_exit(), phones, rate))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
