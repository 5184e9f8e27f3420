"""docker-compose.yml, the Dockerfile and the settings agree (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from streams.settings import Settings, env_var_names
from tests.conftest import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def env_file_vars(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*#?\s*(GEOPUSH_[A-Z0-9_]+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_every_mounted_file_exists() -> None:
    for name, svc in SERVICES.items():
        for vol in svc.get("volumes", []):
            host = vol.split(":")[0]
            if host.startswith("."):
                assert (REPO / host).exists(), f"{name} mounts missing {host}"
        for f in [svc["env_file"]] if isinstance(svc.get("env_file"), str) else svc.get("env_file", []):
            assert (REPO / f).exists(), f"{name} reads missing {f}"


def test_env_names_are_settings_and_all_settings_are_documented() -> None:
    known = env_var_names()
    documented = env_file_vars(REPO / "config" / "geopush.env.example")
    assert set(documented) == known, f"undocumented: {known - set(documented)}, unknown: {set(documented) - known}"
    for name, svc in SERVICES.items():
        for var in svc.get("environment", {}):
            if var.startswith("GEOPUSH_"):
                assert var in known, f"{name} sets unknown {var}"


def test_documented_defaults_match_the_model() -> None:
    documented = env_file_vars(REPO / "config" / "geopush.env.example")
    defaults = Settings.model_fields
    for var, value in documented.items():
        field = defaults[var.removeprefix("GEOPUSH_").lower()]
        if value and var != "GEOPUSH_KAFKA_HOME":
            default = str(field.default).lower() if isinstance(field.default, bool) else str(field.default)
            assert default == value, (var, value, field.default)


def test_ports_and_versions_agree() -> None:
    worker = SERVICES["worker"]
    port = worker["environment"]["GEOPUSH_WEB_PORT"]
    assert port in [str(p) for p in worker["expose"]]
    prom = yaml.safe_load((REPO / "config" / "prometheus" / "prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["dns_sd_configs"][0]
    assert str(targets["port"]) == port and targets["names"] == ["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert SERVICES["kafka"]["image"].endswith(":" + Settings.model_fields["kafka_version"].default)
    assert "healthcheck" in SERVICES["kafka"]
    assert SERVICES["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert "/etc/prometheus/prometheus.yml" in " ".join(SERVICES["prometheus"]["command"])


def test_dockerfile_installs_the_same_package() -> None:
    docker = (REPO / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -c constraints.txt ." in docker
    pyproject = (REPO / "pyproject.toml").read_text()
    for package in re.findall(r'"(\w+)\*"', pyproject):
        assert f"COPY {package} ./{package}" in docker, package
    assert 'ENTRYPOINT ["geopush"]' in docker
    # the compiled hot path: built by the same script as `make native`, shipped as package data
    assert "COPY scripts/native.py ./scripts/native.py" in docker and "python scripts/native.py" in docker
    assert docker.index("python scripts/native.py") < docker.index("--force-reinstall .")
    assert '"*.so"' in pyproject and "native_built.json" in pyproject


def test_workers_reach_the_fcm_emulator_through_its_credentials() -> None:
    emu, worker = SERVICES["fcm-emulator"], SERVICES["worker"]
    cmd = emu["command"]
    port, public = cmd[cmd.index("--port") + 1], cmd[cmd.index("--public-url") + 1]
    assert port in [str(p) for p in emu["expose"]] and public == f"http://fcm-emulator:{port}"
    assert worker["environment"]["GEOPUSH_FCM_ENDPOINT"] == public
    creds = cmd[cmd.index("--credentials-out") + 1]
    assert worker["environment"]["GEOPUSH_FCM_CREDENTIALS"] == creds
    volume = next(v for v in emu["volumes"] if v.split(":")[1] == str(Path(creds).parent))
    assert any(v.startswith(volume.split(":")[0] + ":" + str(Path(creds).parent)) for v in worker["volumes"])
    assert worker["depends_on"]["fcm-emulator"]["condition"] == "service_healthy"


def test_dockerfile_ships_the_kernel_built_as_make_does() -> None:
    docker = (REPO / "Dockerfile").read_text()
    assert "COPY kernel ./kernel" in docker and "bash scripts/kernel.sh" in docker
    # built portably in its stage, copied in before the package is installed with it
    assert "GEOPUSH_KERNEL_RUSTFLAGS= bash scripts/kernel.sh" in docker
    copy = "COPY --from=kernel /src/geofences/_kernel.abi3.so ./geofences/_kernel.abi3.so"
    assert copy in docker and docker.index(copy) < docker.index("pip install --no-cache-dir -c constraints.txt .")
    assert "lib_kernel.so" in (REPO / "scripts" / "kernel.sh").read_text()
