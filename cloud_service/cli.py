"""`tandem cloud ...`: the backend team's commands."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(name="cloud", help="Run and inspect the cloud tier.", no_args_is_help=True)


@app.command()
def describe() -> None:
    """List the services and methods of the wire contract (tandem.v1) this build speaks."""
    from cloud_service.wire.v1 import distribution_pb2, inference_pb2

    table = Table(title="tandem.v1 wire contract")
    for column in ("service", "method", "request", "response"):
        table.add_column(column)
    for module in (inference_pb2, distribution_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                stream = "stream " if method.server_streaming else ""
                table.add_row(
                    service.full_name, method.name, method.input_type.name, stream + method.output_type.name
                )
    Console().print(table)


@app.command()
def serve(
    config: Path = typer.Option(..., "--config", "-c", help="The replica's TOML config (see cloud_service/config.py)."),
    host: str = typer.Option(None, help="Override server.host."),
    port: int = typer.Option(None, min=0, max=65535, help="Override server.port (0: any free port)."),
    metrics_port: int = typer.Option(None, min=0, max=65535, help="Override server.metrics_port (0: off)."),
) -> None:
    """Run a replica: the configured engines behind the Inference service until SIGTERM, then drain."""
    import asyncio

    from cloud_service.config import ConfigError, load_config
    from cloud_service.logs import configure
    from cloud_service.server import serve as run
    from edge_runtime.errors import EdgeRuntimeError

    configure()
    try:
        settings = load_config(config, host=host, port=port, metrics_port=metrics_port)
        asyncio.run(run(settings))
    except (ConfigError, EdgeRuntimeError) as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc


@app.command("new-key")
def new_key(tenant: str = typer.Argument(..., help="The tenant the key is for.")) -> None:
    """Print a fresh API key (give it to the tenant) and the [[tenants]] lines for the server's config."""
    from cloud_service.auth import hash_key, new_key

    key = new_key()
    print(f"API key for {tenant} (shown once; the server stores only its hash): {key}")
    print(f'\n[[tenants]]\nname = "{tenant}"\nkey_sha256 = "{hash_key(key)}"\n'
          "requests_per_minute = 600\ntokens_per_minute = 200000")
