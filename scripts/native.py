"""Compile the hot path with mypyc, in place: `python scripts/native.py` (what `make native` runs).

Builds ``geofences.native.MODULES`` into C extensions beside their sources and their shared
library into ``geofences/``; ``geofences.native`` decides at import whether they are used.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    from geofences.native import GROUP, MODULES, extension_of, record_build, source_of

    paths = [str(source_of(m).relative_to(ROOT)) for m in MODULES]
    setup(
        name="geopush-native",
        ext_modules=mypycify(paths, group_name=GROUP, opt_level="3"),
        script_args=["build_ext", "--inplace", "--build-temp", "build/native"],
    )
    missing = [m for m in MODULES if extension_of(m) is None]
    if missing:
        raise SystemExit(f"mypyc built no extension for {', '.join(missing)}")
    record_build()


if __name__ == "__main__":
    main()
