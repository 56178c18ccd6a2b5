"""The `tandem` command line: one entry point that mounts each package's commands.

    tandem export ...   export/cli.py          (ML engineers)
    tandem edge ...     edge_runtime/cli.py    (app developers: run a bundle here)
    tandem cloud ...    cloud_service/cli.py   (backend teams)
    tandem eval ...     evaluation/cli.py      (measuring routing quality end to end)
    tandem demo         tandem/demo.py         (everyone: the end-to-end run)

This module is the composition root of the command line, the only place that sees every package; nothing
outside ``tandem`` imports it. What one package's commands need from another (``tandem eval`` needs a cloud
tier) reaches them through the context object, ``Services``. Commands import their heavy libraries inside
their bodies, so ``tandem --help`` is fast and works with any extra installed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from cloud_service.cli import app as cloud_app
from edge_runtime.cli import app as edge_app
from evaluation.cli import app as eval_app
from export.cli import app as export_app

if TYPE_CHECKING:
    from evaluation.routing.run import CloudSpec


@asynccontextmanager
async def _start_cloud(spec: CloudSpec) -> AsyncIterator[str]:
    from tandem.fleet import start_cloud

    async with start_cloud(spec) as target:
        yield target


@dataclass(frozen=True)
class Services:
    """What the mounted commands get from the composition root (Click's context object, ``ctx.obj``)."""

    start_cloud = staticmethod(_start_cloud)
    """Starts the cloud tier ``tandem eval`` runs against: ``tandem.fleet.start_cloud``."""


app = typer.Typer(
    name="tandem",
    help="Tandem: edge-plus-cloud hybrid inference for LLMs.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"obj": Services()},
)
app.add_typer(export_app)
app.add_typer(edge_app)
app.add_typer(cloud_app)
app.add_typer(eval_app)

# Which extra brings each optional top-level module, for the message when one is missing.
_EXTRA_OF_MODULE = {
    "torch": "export",
    "transformers": "export",
    "tokenizers": "edge",
    "jinja2": "edge",
    "safetensors": "export",
    "gguf": "export",
    "optimum": "export",
    "onnx": "export",
    "onnx_ir": "export",
    "sentencepiece": "export",
    "onnxruntime": "edge",
    "llama_cpp": "edge",
    "grpc": "edge",
    "google": "edge",
    "psutil": "edge",
    "cryptography": "edge",
    "prometheus_client": "cloud",
    "vllm": "gpu",
}


def default_cache_dir() -> Path:
    """Where built toy models and other reusable artifacts go: $XDG_CACHE_HOME/tandem or ~/.cache/tandem."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tandem"


@app.command()
def version() -> None:
    """Print the installed version."""
    from tandem import __version__

    print(__version__)


@app.command()
def demo(
    cache_dir: Path = typer.Option(None, help="Where built models are kept [default: ~/.cache/tandem]."),
    smoke: bool = typer.Option(False, "--smoke", help="Tiny models (built in under a minute) and fewer prompts."),
    skip_real_model: bool = typer.Option(False, "--skip-real-model",
                                         help="Skip the real pretrained model's part (skipped with --smoke too)."),
) -> None:
    """Run the end-to-end demo: the task models on a local cloud and a device, through routing scenarios."""
    # gRPC core logs a line at INFO for every connection a stopped replica or gateway cuts; the demo stops them
    # on purpose, so only errors are shown (read when gRPC starts: before the demo imports it).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from edge_runtime.storage import fault_of
    from export.errors import ExportError
    from tandem.demo import PIPE_WIDTH, DemoError, run_demo

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=PIPE_WIDTH)
    try:
        run_demo(console, cache_dir or default_cache_dir(), smoke=smoke, real_model=False if skip_real_model else None)
    except (DemoError, ExportError) as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    except OSError as exc:  # the cache folder: a full disk, read-only, not this user's
        fault = fault_of(exc)
        if fault is None:
            raise
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(fault))}", soft_wrap=True)
        raise typer.Exit(1) from exc


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        extra = _EXTRA_OF_MODULE.get(top)
        if extra is None:
            raise
        Console(stderr=True).print(
            f"[bold red]error:[/] this command needs {top!r}, which comes with the {extra} extra: "
            + escape(f"pip install 'tandem-inference[{extra}]'"),
            soft_wrap=True,
        )
        sys.exit(2)
