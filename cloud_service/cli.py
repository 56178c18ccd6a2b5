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
    config: Path = typer.Option(None, "--config", "-c", help="The replica's TOML config file."),
    model: Path = typer.Option(None, help="Serve this model folder (instead of, or added to, the config's models)."),
    name: str = typer.Option(None, help="Name of --model [default: the folder's name]."),
    engine: str = typer.Option("cpu", help="Engine of --model: cpu, vllm, or simulator (a load simulator for "
                                          "routing experiments only: no model, filler text)."),
    host: str = typer.Option(None, help="Override server.host."),
    port: int = typer.Option(None, min=0, max=65535, help="Override server.port (0: any free port)."),
    metrics_port: int = typer.Option(None, min=0, max=65535, help="Override server.metrics_port (0: off)."),
    http_port: int = typer.Option(None, min=0, max=65535,
                                  help="Serve OpenAI-compatible HTTP on this port too (server.http_port; 0: any)."),
    allow_unauthenticated: bool = typer.Option(None, help="Serve without API keys (local experiments only)."),
) -> None:
    """Run a replica: the configured engines behind the Inference service until SIGTERM, then drain."""
    import asyncio
    import dataclasses

    from cloud_service.config import ENGINES, ModelConfig, ServerConfig, load_config
    from cloud_service.errors import ConfigError
    from cloud_service.front_door.config import FrontDoorConfig
    from cloud_service.logs import configure
    from cloud_service.server import serve as run
    from edge_runtime.errors import EdgeRuntimeError

    configure()
    try:
        if config is None and model is None:
            raise ConfigError("give --config FILE, or --model FOLDER (with --allow-unauthenticated or a config)")
        if engine not in ENGINES:
            raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        flags = {"host": host, "port": port, "metrics_port": metrics_port, "http_port": http_port,
                 "allow_unauthenticated": allow_unauthenticated}
        extra = (ModelConfig(name or model.name, model, engine),) if model is not None else ()
        if config is not None:
            settings = load_config(config, **flags)
            if extra:
                settings = dataclasses.replace(settings, models=settings.models + extra)
        else:
            settings = ServerConfig(models=extra, front_door=FrontDoorConfig.from_flags(flags))
        asyncio.run(run(settings))
    except (ConfigError, EdgeRuntimeError) as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc


@app.command()
def gateway(
    config: Path = typer.Option(None, "--config", "-c",
                                help="The gateway's TOML config file (the replica's format plus a gateway table)."),
    host: str = typer.Option(None, help="Override server.host."),
    port: int = typer.Option(None, min=0, max=65535, help="Override server.port (0: any free port)."),
    metrics_port: int = typer.Option(None, min=0, max=65535, help="Override server.metrics_port (0: off)."),
    http_port: int = typer.Option(None, min=0, max=65535,
                                  help="Serve OpenAI-compatible HTTP on this port too (server.http_port; 0: any)."),
    replica: list[str] = typer.Option(None, "--replica", metavar="HOST:PORT",
                                      help="A replica (repeatable); replaces gateway.replicas and discovery_dns."),
    policy: str = typer.Option(None, help="Override gateway.policy: round_robin, random, least_loaded, "
                                          "p2c or p2c_affinity."),
    allow_unauthenticated: bool = typer.Option(None, help="Serve without API keys (local experiments only)."),
) -> None:
    """Run the gateway in front of replicas until SIGTERM, then drain; SIGHUP re-reads the version weights.

    Power of two choices on live load, prefix affinity, health checks, retries, canary weights, admission control.
    """
    import asyncio

    from cloud_service.errors import ConfigError
    from cloud_service.front_door.config import FrontDoorConfig
    from cloud_service.gateway.config import GatewayConfig, GatewaySettings, load_gateway_config
    from cloud_service.gateway.server import serve_gateway
    from cloud_service.logs import configure

    configure()
    try:
        flags = {"host": host, "port": port, "metrics_port": metrics_port, "http_port": http_port,
                 "allow_unauthenticated": allow_unauthenticated, "replicas": tuple(replica or ()) or None,
                 "policy": policy}
        if config is not None:
            settings = load_gateway_config(config, **flags)
        elif not replica:
            raise ConfigError("give --config FILE, or --replica HOST:PORT (repeatable) with --allow-unauthenticated")
        else:
            settings = GatewayConfig(
                gateway=GatewaySettings(replicas=tuple(replica), **({"policy": policy} if policy else {})),
                front_door=FrontDoorConfig.from_flags({"host": host, "port": port, "metrics_port": metrics_port,
                                                       "http_port": http_port,
                                                       "allow_unauthenticated": allow_unauthenticated}),
            )
        asyncio.run(serve_gateway(settings, config))
    except ConfigError as exc:
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
