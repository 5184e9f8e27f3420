"""The compiled hot path: used only while it matches its source, and deciding exactly as the source does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from geofences.native import MODULES, PURE_ENV, extension_of, modules_from_source, record_build

REPO = Path(__file__).resolve().parents[2]


def fake_tree(root: Path, built: tuple[str, ...]) -> None:
    """Sources of every compiled module, (empty) extensions of ``built``, and the build's record."""
    for module in MODULES:
        src = root.joinpath(*module.split(".")).with_suffix(".py")
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(f"# {module}\n")
        if module in built:
            src.with_name(f"{src.stem}.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    record_build(root)


def test_fresh_extensions_are_used_and_pure_python_can_be_asked_for(tmp_path: Path) -> None:
    fake_tree(tmp_path, MODULES)
    assert modules_from_source({}, tmp_path) == []
    assert modules_from_source({PURE_ENV: "1"}, tmp_path) == sorted(MODULES)
    assert modules_from_source({PURE_ENV: "0"}, tmp_path) == []


def test_no_extensions_means_plain_python_without_a_word(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    fake_tree(tmp_path, ())
    assert modules_from_source({}, tmp_path) == []
    assert not recwarn.list


def test_one_stale_extension_sends_every_module_to_its_source(tmp_path: Path) -> None:
    fake_tree(tmp_path, MODULES)
    engine = tmp_path / "decisions" / "engine.py"
    engine.write_text("# edited after the build\n")
    with pytest.warns(RuntimeWarning, match=r"decisions\.engine changed since compiled.*make native"):
        assert modules_from_source({}, tmp_path) == sorted(MODULES)


def test_an_unrecorded_build_is_not_trusted(tmp_path: Path) -> None:
    fake_tree(tmp_path, MODULES)
    (tmp_path / "geofences" / "native_built.json").unlink()
    with pytest.warns(RuntimeWarning, match="changed since compiled"):
        assert modules_from_source({}, tmp_path) == sorted(MODULES)


def test_a_partial_build_is_not_used(tmp_path: Path) -> None:
    fake_tree(tmp_path, MODULES[:2])
    with pytest.warns(RuntimeWarning, match="only some are compiled"):
        assert modules_from_source({}, tmp_path) == sorted(MODULES[:2])


def replay_output(tmp_path: Path, pure: bool) -> bytes:
    env = {**os.environ, PURE_ENV: "1" if pure else "0"}
    out = tmp_path / f"decisions-{'pure' if pure else 'native'}.jsonl"
    code = (
        "import sys; from geofences.native import compiled; "
        "from streams.cli import main; "
        f"print('compiled', compiled(), file=sys.stderr); sys.argv = ['geopush', 'replay', '--catalog', "
        f"'config/catalog', '--devices', {str(tmp_path / 'devices.jsonl')!r}, '--pings', "
        f"{str(tmp_path / 'pings.jsonl')!r}, '--out', {str(out)!r}]; main()"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"compiled {not pure and extension_of('decisions.engine') is not None}" in run.stderr
    return out.read_bytes()


@pytest.mark.slow
def test_compiled_and_pure_python_decide_byte_for_byte_the_same(tmp_path: Path) -> None:
    sim = subprocess.run(
        [sys.executable, "-m", "streams.cli", "simulate", "--devices", "300", "--pings-out",
         str(tmp_path / "pings.jsonl"), "--devices-out", str(tmp_path / "devices.jsonl")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr[-2000:]
    pure, native = replay_output(tmp_path, pure=True), replay_output(tmp_path, pure=False)
    assert pure.count(b"\n") > 100 and native == pure
