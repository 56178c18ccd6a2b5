"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
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

    from tandem.cli import app

    return CliRunner(env={"COLUMNS": "200"}).invoke(app, list(args), terminal_width=200)


class ConnectionCounter:
    """A plain TCP listener on loopback that counts the connections it accepts (and speaks no protocol)."""

    ACCEPT_POLL_S = 0.05

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(self.ACCEPT_POLL_S)
        self.port = self.socket.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()
