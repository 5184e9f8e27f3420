"""A real single-node Apache Kafka broker (KRaft) for development, tests and the demo.

The jars come from Maven Central (``org.apache.kafka:kafka_2.13`` and its runtime dependencies)
into a cache; the broker runs on the machine's Java on 127.0.0.1, a free port and its own data
directory, with a bounded heap. :class:`LocalKafka` formats, starts, health-checks (a Metadata
request must succeed) and stops it. Nothing here is used in production.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LOG4J2_YAML = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
"""

POM_TEMPLATE = """\
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.geopush</groupId>
  <artifactId>geopush-local-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka_version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>2.24.3</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>2.24.3</version>
    </dependency>
  </dependencies>
</project>
"""


class LocalKafkaError(RuntimeError):
    """The local broker could not be fetched, started or reached; the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jar_dir(kafka_home: Path, version: str) -> Path:
    return kafka_home / version / "libs"


def ensure_jars(kafka_home: Path, version: str) -> Path:
    """Return the directory of the broker's jars, fetching them with Maven if missing."""
    libs = jar_dir(kafka_home, version)
    if (libs / f"kafka_2.13-{version}.jar").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError("Maven (mvn) is not installed: it fetches the Kafka jars")
    if shutil.which("java") is None:
        raise LocalKafkaError("Java is not installed: the local Kafka broker needs Java 17+")
    libs.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=libs.parent) as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(POM_TEMPLATE.format(kafka_version=version))
        staging = Path(tmp) / "libs"
        cmd = [
            mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}", "-DincludeScope=runtime",
        ]  # fmt: skip
        log.info("fetching Apache Kafka %s jars from Maven Central", version)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise LocalKafkaError(
                f"mvn could not fetch org.apache.kafka:kafka_2.13:{version}:\n" + (proc.stdout + proc.stderr)[-3000:]
            )
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
    return libs


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the child when the process that started it dies (no orphan JVMs)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _cluster_id() -> str:
    """A random KRaft cluster id; never starting with '-', which the storage tool would take for an option."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


# what Kafka's own start script (kafka-run-class.sh, KAFKA_JVM_PERFORMANCE_OPTS) runs a broker
# with; this module starts the JVM itself, so it says them here. Without MaxGCPauseMillis=20,
# G1 aims at 200-ms pauses, and a broker paused that long holds every ping behind it.
JVM_PERFORMANCE_OPTS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
)


@dataclass
class LocalKafka:
    """One KRaft node (broker + controller) on 127.0.0.1 with its own data directory."""

    data_dir: Path
    kafka_home: Path
    version: str = "4.1.1"
    port: int = 0
    controller_port: int = 0
    heap_mb: int = 512
    tie_to_parent: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def gc_log_path(self) -> Path:
        """The JVM's garbage-collector log (pauses, one line each), as Kafka's own scripts keep it."""
        return self.data_dir / "broker-gc.log"

    @property
    def state_path(self) -> Path:
        return self.data_dir / "broker.json"

    def _server_properties(self) -> str:
        logs = self.data_dir / "log"
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={logs}",
                "num.partitions=1",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=8",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=8",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=168",
                "",
            ]
        )

    def start(self, timeout_s: float = 90.0) -> LocalKafka:
        """Format storage (first time), start the JVM and wait until Metadata answers."""
        if shutil.which("java") is None:
            raise LocalKafkaError("Java is not installed: the local Kafka broker needs Java 17+")
        libs = ensure_jars(self.kafka_home, self.version)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        if not self.controller_port:
            self.controller_port = free_port()
        props = self.data_dir / "server.properties"
        props.write_text(self._server_properties())
        log4j = self.data_dir / "log4j2.yaml"
        log4j.write_text(LOG4J2_YAML)
        classpath = f"{libs}/*"
        java = ["java", f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
        if not (self.data_dir / "log" / "meta.properties").exists():
            fmt = subprocess.run(
                [*java, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if fmt.returncode != 0:
                raise LocalKafkaError(f"formatting {self.data_dir} failed:\n{fmt.stdout}{fmt.stderr}")
        heap = [f"-Xmx{self.heap_mb}m", f"-Xms{min(self.heap_mb, 256)}m", *JVM_PERFORMANCE_OPTS]
        gc_log = [f"-Xlog:gc:file={self.gc_log_path}:uptime,tags:filecount=2,filesize=20M"]
        cmd = [java[0], *heap, *gc_log, "-Djava.awt.headless=true", *java[1:], "kafka.Kafka", str(props)]
        logf = self.log_path.open("ab")
        self.process = subprocess.Popen(
            cmd,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if self.tie_to_parent else None,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the broker last
        )
        logf.close()
        self.state_path.write_text(
            json.dumps({"pid": self.process.pid, "port": self.port, "bootstrap": self.bootstrap})
        )
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        kafka_log = logging.getLogger("kafka")
        level = kafka_log.level
        kafka_log.setLevel(logging.CRITICAL)  # connection refused is expected while it starts
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise LocalKafkaError(
                        f"broker exited with code {self.process.returncode}; log tail:\n{self.log_tail()}"
                    )
                if not _accepts(self.port):
                    time.sleep(0.1)
                    continue
                try:
                    if metadata_ok(self.bootstrap):
                        return
                except Exception as exc:
                    last = exc
                time.sleep(0.2)
        finally:
            kafka_log.setLevel(level)
        self.stop()
        raise LocalKafkaError(
            f"broker on {self.bootstrap} did not answer Metadata within {timeout_s:.0f}s "
            f"(last error: {last}); log tail:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the broker, wait for a clean shutdown, SIGKILL it if it does not stop."""
        proc = self.process
        if proc is None:
            pid = read_state_pid(self.data_dir)
            if pid is not None:
                stop_pid(pid, timeout_s)
            self.state_path.unlink(missing_ok=True)
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.process = None
        self.state_path.unlink(missing_ok=True)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def metadata_ok(bootstrap: str, timeout_ms: int = 3000) -> bool:
    """True when the broker answers a Metadata request with at least one broker."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        cluster = admin.describe_cluster()
        return bool(cluster.get("brokers"))
    finally:
        admin.close()


def read_state_pid(data_dir: Path) -> int | None:
    path = data_dir / "broker.json"
    if not path.exists():
        return None
    pid = int(json.loads(path.read_text())["pid"])
    return pid if pid_alive(pid) else None


def read_state(data_dir: Path) -> dict[str, object] | None:
    path = data_dir / "broker.json"
    if not path.exists():
        return None
    state: dict[str, object] = json.loads(path.read_text())
    return state


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid: int, timeout_s: float = 20.0) -> None:
    """Terminate a detached broker by pid, escalating to SIGKILL after ``timeout_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.2)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
