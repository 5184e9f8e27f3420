"""The one typed configuration of a geopush process, read from ``GEOPUSH_*`` environment variables.

Every field is documented here and in ``config/geopush.env.example``; an unknown ``GEOPUSH_``
variable or an invalid value fails at start with a message that names the variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "GEOPUSH_"


class SettingsError(ValueError):
    """Configuration that cannot be used; the message names each offending variable."""


class Settings(BaseSettings):
    """Settings of a worker, the CLI and the local development stack."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # --- Kafka -----------------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated host:port.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How clients talk to the brokers."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for SSL/SASL_SSL.")
    topic_partitions: int = Field(12, ge=1, le=1024, description="Partitions of the pings/devices topics and tables.")
    topic_replicas: int = Field(1, ge=1, le=7, description="Replication factor of topics geopush creates (3 in prod).")

    # --- topics ----------------------------------------------------------------------------
    app_id: str = Field("geopush", pattern=r"^[A-Za-z0-9._-]+$", description="Consumer group and table prefix.")
    topic_pings: str = Field("pings", description="Location pings from the mobile app.")
    topic_pings_dlq: str = Field("pings.dlq", description="Rejected pings with their reason.")
    topic_devices: str = Field("devices", description="Compacted device registry.")
    topic_decisions: str = Field("decisions", description="Every decision, notify or not.")
    topic_notifications: str = Field("notifications", description="Notifications to send.")
    topic_deliveries: str = Field("deliveries", description="What FCM answered.")
    topic_catalog: str = Field("geopush.catalog", description="Compacted published catalogs.")

    # --- worker ----------------------------------------------------------------------------
    web_host: str = Field("127.0.0.1", description="Address of the worker's web server.")
    web_port: int = Field(6066, ge=1, le=65535, description="Port of /metrics, /dashboard.")
    lag_refresh_s: float = Field(10.0, gt=0, description="How often the worker reads consumer lag for /metrics.")
    dashboard_sample_s: float = Field(5.0, gt=0, description="Interval of the dashboard's history points (1 h kept).")
    web_token: SecretStr | None = Field(
        None, description="Bearer token required for /dashboard when not bound to loopback."
    )
    data_dir: Path = Field(Path("var"), description="Device state (RocksDB, under state/) and local files.")
    store: Literal["rocksdb", "memory"] = Field(
        "rocksdb", description="Where a worker keeps its partitions' device state (memory: rebuilt from the changelog)."
    )
    poll_max_records: int = Field(
        20_000, ge=1, le=200_000,
        description="Most pings the decision step takes per poll. Under a backlog, bigger polls spread each "
        "poll's fixed cost (a fetch, a batch per partition to the decisions topic, the engine's set-up) over "
        "more pings; a quiet stream's polls stay small whatever this is.",
    )  # fmt: skip
    commit_interval_s: float = Field(
        1.0, gt=0, le=60,
        description="How often the decision step checkpoints each partition: the device states changed by the "
        "polls decided since its last checkpoint are written once (changelog, local store), then their pings' offsets committed "
        "(a stop or a rebalance checkpoints at once). Decisions are sent as each poll is decided, whatever this is. "
        "Offsets are committed at most every half interval, so a crash repeats about one and a half intervals "
        "of the stream at most (at-least-once).",
    )  # fmt: skip
    checkpoint_in_turns: bool = Field(
        True,
        description="Checkpoint a worker's partitions in turns spread over commit_interval_s (one every "
        "interval / partitions) rather than all at once: the same writes, without a burst the pings wait "
        "behind. Off: one larger checkpoint an interval instead of one a partition.",
    )  # fmt: skip
    state_refresh_s: float = Field(
        0.0, ge=0, le=3600,
        description="0 (the default): every device state a checkpoint's polls changed is written (changelog, "
        "local store). Above 0: a state whose only changes are the device's last position, ping time and "
        "visits' last-seen times is written at most once per this many seconds of its pings' time; a visit "
        "begun or ended, a dwell decided, a notification or a hold is written at the next checkpoint as "
        "always, and a stop or a rebalance writes everything. Fewer writes where devices ping often, at a "
        "price after a crash only: a restarted worker may see a device's last position and ping time up to "
        "this much older, so the speed and ordering gates of its next pings may judge differently. Measured "
        "with 30 s where devices ping about once a second: no clear latency gain (bench/results/e2e.md).",
    )  # fmt: skip
    fetch_min_bytes: int = Field(
        1, ge=1, le=16 * 1024 * 1024,
        description="Bytes of pings the broker gathers for the decision step before it answers a fetch (or "
        "fetch_max_wait_ms passes); 1 answers as soon as there is any. Larger values mean fewer, bigger fetches "
        "(less broker and worker work a ping) at the price of up to fetch_max_wait_ms more latency a ping: a "
        "fetch is asked again only once its pings are taken. On a 2-core host, 64 KiB / 20 ms made no measurable "
        "difference; 150-500 KB cut the worker's CPU 15-20 % at 100k pings/s but raised p50 and, mostly, p99 "
        "(bench/results/e2e.md).",
    )  # fmt: skip
    fetch_max_wait_ms: int = Field(
        500, ge=0, le=5000,
        description="Most a fetch of the decision step waits at the broker for fetch_min_bytes of pings.",
    )  # fmt: skip
    consumer_session_timeout_s: float = Field(30.0, gt=0, description="How long a silent worker keeps its partitions.")
    consumer_heartbeat_s: float = Field(3.0, gt=0, description="Consumer heartbeat interval.")
    state_ttl_days: float = Field(
        35.0, gt=0, description="Idle devices' state expires after this (and never before the longest cap window)."
    )
    presence_timeout_s: float = Field(
        1800.0, gt=0, description="A device silent this long inside a fence has left it (EXIT)."
    )
    presence_sweep_s: float = Field(60.0, gt=0, description="How often a worker looks for silent devices.")
    state_cache_devices: int = Field(
        200_000, ge=0, description="Decoded device states a worker keeps in memory between polls (0: none)."
    )
    log_level: Literal["debug", "info", "warn", "error"] = Field("info", description="Log level.")
    pure_python: bool = Field(
        False,
        description="Run the hot path from its Python source even where `make native` compiled it "
        "(profiling, debugging); read as the process starts.",
    )
    kernel: bool = Field(
        True,
        description="Match pings in the compiled fence-matching kernel where `make kernel` built it "
        "(off: the index's numpy path, same answers); read when an index is built.",
    )
    presence_book: bool = Field(
        True,
        description="Keep device states in the kernel's presence book and step gates and presence "
        "there, where `make kernel` built it (off, or with the kernel off: the Python engine, same "
        "decisions); read when a partition is assigned.",
    )

    # --- catalog ---------------------------------------------------------------------------
    catalog_path: Path = Field(Path("config/catalog"), description="Catalog YAML file or directory loaded at start.")

    # --- FCM -------------------------------------------------------------------------------
    fcm_project_id: str = Field("geopush-dev", description="Firebase project id.")
    fcm_credentials: Path | None = Field(
        None, description="Service-account JSON; none means application default credentials."
    )
    fcm_endpoint: str | None = Field(
        None, description="FCM API base URL override (the local emulator); none means Google."
    )
    deliver: bool = Field(True, description="Run the delivery step (notifications -> FCM -> deliveries) in the worker.")
    fcm_rate_per_min: int = Field(
        600_000,
        ge=1,
        description="Project-wide FCM send rate, shared by all workers in proportion to their partitions.",
    )
    fcm_batch_size: int = Field(500, ge=1, le=500, description="Messages per FCM batch (FCM allows 500).")
    fcm_backoff_base_s: float = Field(0.5, gt=0, description="First retry delay; doubles per attempt, with jitter.")
    fcm_backoff_max_s: float = Field(60.0, gt=0, description="Longest retry delay (a Retry-After may be longer).")
    fcm_timeout_s: float = Field(10.0, gt=0, description="Timeout of one FCM HTTP request.")
    fcm_concurrency: int = Field(
        10, ge=1, le=500, description="FCM requests in flight per worker (a batch is sent in slices of this size)."
    )

    # --- local broker (dev and tests) ------------------------------------------------------
    kafka_version: str = Field("4.1.1", description="Apache Kafka version of the local broker.")
    kafka_home: Path = Field(
        Path.home() / ".cache" / "geopush" / "kafka",
        description="Where the local broker's jars are cached.",
    )
    kafka_heap_mb: int = Field(512, ge=128, le=8192, description="Local broker max heap (MiB).")

    def _auth_kwargs(self) -> dict[str, object]:
        """Security protocol and SASL options, spelled the same by kafka-python and aiokafka."""
        kwargs: dict[str, object] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            kwargs["sasl_mechanism"] = self.kafka_sasl_mechanism
            kwargs["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                kwargs["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        return kwargs

    def kafka_client_kwargs(self) -> dict[str, object]:
        """Keyword arguments for kafka-python clients built from these settings."""
        kwargs = {"bootstrap_servers": self.kafka_bootstrap.split(","), **self._auth_kwargs()}
        if self.kafka_ssl_cafile:
            kwargs["ssl_cafile"] = str(self.kafka_ssl_cafile)
        return kwargs

    def aiokafka_kwargs(self) -> dict[str, object]:
        """Keyword arguments for aiokafka clients built from these settings."""
        import ssl

        kwargs = {"bootstrap_servers": self.kafka_bootstrap, **self._auth_kwargs()}
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            cafile = str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None
            kwargs["ssl_context"] = ssl.create_default_context(cafile=cafile)
        return kwargs


def env_var_names() -> set[str]:
    """All ``GEOPUSH_`` variables the settings model understands."""
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def load_settings(environ: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from the environment (or ``environ``); raise SettingsError naming variables."""
    env = dict(os.environ if environ is None else environ)
    known = env_var_names()
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise SettingsError("unknown setting(s): " + ", ".join(unknown) + " (see config/geopush.env.example)")
    values: dict[str, object] = {k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k in known}
    values.update(overrides)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"{ENV_PREFIX}{field.upper()}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid setting(s):\n  " + "\n  ".join(problems)) from None


def environ_for(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment (``base`` without its GEOPUSH_* variables) that reproduces ``settings``
    in a child process."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith(ENV_PREFIX)}
    for name, value in settings.model_dump().items():
        if value is not None:
            v = value.get_secret_value() if isinstance(value, SecretStr) else value
            env[f"{ENV_PREFIX}{name.upper()}"] = str(v)
    return env
