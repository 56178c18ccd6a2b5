"""`tandem cloud ...`: the backend team's commands."""

from __future__ import annotations

import typer
from rich.console import Console
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
