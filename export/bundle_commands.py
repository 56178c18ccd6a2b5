"""`tandem export keygen | verify | inspect`: signing keys and the bundles they sign."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from export.cli_support import cli_errors, console

PUBLIC_KEY_HELP = "Trusted Ed25519 public key (PEM file); repeat for several. Env: TANDEM_PUBLIC_KEY."


def _verify(bundle: Path, public_keys: list[Path]) -> tuple[object, str]:
    """Verify, or print why not and exit 1."""
    from edge_runtime.bundle import load_public_key, verify_bundle
    from edge_runtime.errors import BundleError

    try:
        keys = [load_public_key(path) for path in public_keys]
        manifest = verify_bundle(bundle, keys)
    except BundleError as exc:
        console.print(f"[bold red]verification failed:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    signer = json.loads((bundle / "manifest.sig").read_text())["key_id"]
    return manifest, signer


def keygen(
    prefix: Path = typer.Argument(..., help="Writes PREFIX.key (private, mode 0600) and PREFIX.pub (public)."),
) -> None:
    """Make an Ed25519 key pair for signing bundles."""
    with cli_errors():
        from edge_runtime.bundle import key_id, load_public_key
        from export.signing_keys import generate_keypair

        private_path, public_path = generate_keypair(prefix)
        console.print(f"private key: {private_path}  (keep it secret; pass it as --signing-key)")
        console.print(f"public key:  {public_path}  (devices trust bundles signed by it)")
        Console().print(f"key id {key_id(load_public_key(public_path))}")


def verify(
    bundle: Path = typer.Argument(..., help="Bundle folder."),
    public_key: list[Path] = typer.Option(..., "--public-key", envvar="TANDEM_PUBLIC_KEY", help=PUBLIC_KEY_HELP),
) -> None:
    """Check the manifest signature and every file's size and sha256; exit 1 when anything is off."""
    manifest, signer = _verify(bundle, public_key)
    Console().print(f"OK: {bundle} ({manifest.format} {manifest.quantization}, {len(manifest.files)} files) "
                    f"signed by trusted key {signer}")


def inspect(
    bundle: Path = typer.Argument(..., help="Bundle folder."),
    public_key: list[Path] = typer.Option(
        None, "--public-key", envvar="TANDEM_PUBLIC_KEY", help=PUBLIC_KEY_HELP + " Verifies first when given."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print manifest.json as is."),
) -> None:
    """Print a bundle's manifest readably."""
    from edge_runtime.bundle import MANIFEST_FILE, Manifest
    from edge_runtime.errors import BundleError

    if public_key:
        manifest, signer = _verify(bundle, public_key)
        trust = f"verified, signed by trusted key {signer}"
    else:
        try:
            manifest = Manifest.from_json((bundle / MANIFEST_FILE).read_bytes())
        except (OSError, BundleError) as exc:
            console.print(f"[bold red]error:[/] cannot read {bundle / MANIFEST_FILE}: {escape(str(exc))}")
            raise typer.Exit(2) from exc
        trust = "[yellow]signature and hashes not checked[/] (pass --public-key)"
    out = Console()
    if as_json:
        out.print_json((bundle / MANIFEST_FILE).read_text())
        return
    summary = Table(title=f"{manifest.name}: {trust}", show_header=False)
    for label, value in (
        ("format", f"{manifest.format} ({manifest.quantization})"),
        ("architecture", f"{manifest.architecture}, {manifest.parameters:,} parameters"),
        ("context length", f"{manifest.context_length:,} tokens"),
        ("model file", manifest.model_file),
        ("weights", f"{manifest.memory.weight_bytes:,} bytes"),
        ("KV cache", f"{manifest.memory.kv_bytes_per_token:,} bytes per token"),
        ("memory at full context", f"{manifest.memory.bytes_for(manifest.context_length):,} bytes"),
        ("tool version", manifest.tool_version or "?"),
    ):
        summary.add_row(label, value)
    out.print(summary)
    if manifest.tensor_types:
        types = Table("tensor type", "tensors", title="stored tensor types")
        for type_name, count in sorted(Counter(manifest.tensor_types.values()).items()):
            types.add_row(type_name, str(count))
        out.print(types)
    if manifest.evaluation:
        out.print("[bold]evaluation[/]")
        out.print_json(json.dumps(manifest.evaluation))
    files = Table("file", "bytes", "sha256", title="files")
    for name, entry in sorted(manifest.files.items()):
        files.add_row(name, f"{entry.size:,}", entry.sha256[:16] + "…")
    out.print(files)


def register(app: typer.Typer) -> None:
    app.command()(keygen)
    app.command()(verify)
    app.command()(inspect)
