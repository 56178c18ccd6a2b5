"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def heavy_modules_after(statement: str) -> list[str]:
    """Run ``statement`` in a fresh interpreter and return which heavy ML modules it loaded."""
    probe = (
        f"{statement}\n"
        "import sys\n"
        "print(' '.join(m for m in ('torch', 'transformers', 'tokenizers', 'vllm') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    return done.stdout.split()


def invoke(*args: str):
    """Run `tandem ARGS...` in-process, wide enough that Rich tables do not wrap names."""
    from typer.testing import CliRunner

    from sdk.cli import app

    return CliRunner(env={"COLUMNS": "200"}).invoke(app, list(args), terminal_width=200)
