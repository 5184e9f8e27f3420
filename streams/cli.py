"""``geopush``: one command for marketers and operators. Run ``geopush --help``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

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
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")


def settings_or_exit() -> Settings:
    """Load settings, or print what is wrong with them and exit 2."""
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


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
    except Exception as exc:  # noqa: BLE001 - reported to the user
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


@app.command("worker")
def worker() -> None:
    """Run a stream worker: pings in, decisions and notifications out."""
    from streams.app import create_app
    from streams.pipeline import pipeline_registrars
    from streams.worker import run_worker

    s = settings_or_exit()
    run_worker(create_app(s, pipeline_registrars()), s)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
