"""`tandem eval ...`: the evaluation commands (mounted by ``sdk/cli.py``). Each imports its heavy libraries when
it runs, so `tandem --help` stays fast."""

from __future__ import annotations

import typer

from evaluation.routing.cli import register as register_routing

app = typer.Typer(name="eval", help="Measure Tandem end to end on real engines (routing quality).",
                  no_args_is_help=True)
register_routing(app)
