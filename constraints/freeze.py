"""Write the lock: every distribution installed in this interpreter's environment, as ``name==version``.

    python constraints/freeze.py OUT [--exclude NAME ...] [--title TEXT]   (TEXT: one comment line on top)

Run by ``make lock`` inside a fresh virtualenv; the project itself is left out (``--exclude``). The file is
written atomically, sorted by normalised name, so a refresh shows in git as the versions that changed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from importlib import metadata
from pathlib import Path


def normalise(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(exclude: set[str]) -> dict[str, str]:
    """Normalised name -> version of every distribution on sys.path, less ``exclude``."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = normalise(dist.metadata["Name"])
        if name not in exclude:
            found.setdefault(name, dist.version)  # the first on sys.path wins, as for imports
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--exclude", action="append", default=[])
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    pins = installed({normalise(name) for name in args.exclude})
    header = [f"# {args.title}"] if args.title else []
    body = [f"{name}=={version}" for name, version in sorted(pins.items())]
    temporary = args.out.with_name(f".{args.out.name}.{os.getpid()}.partial")
    temporary.write_text("\n".join([*header, *body]) + "\n")
    temporary.replace(args.out)
    print(f"{args.out}: {len(body)} pins ({sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
