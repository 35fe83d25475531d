"""Run every benchmark in this package: each `bench/*_bench.py` module's `main()`."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main() -> int:
    names = sorted(
        info.name for info in pkgutil.iter_modules(bench.__path__) if info.name.endswith("_bench")
    )
    failed = []
    for name in names:
        print(f"== bench.{name}", flush=True)
        module = importlib.import_module(f"bench.{name}")
        try:
            module.main([])
        except Exception as err:  # one broken benchmark must not hide the others' figures
            failed.append(name)
            print(f"bench.{name} failed: {err!r}", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
