"""`tandem eval ...`: the evaluation commands, mounted by ``tandem/cli.py``. Each imports its heavy libraries when
it runs, so `tandem --help` stays fast. The cloud tier a run needs comes from the command line's context object
(``ctx.obj.start_cloud``, an ``evaluation.routing.run.StartCloud``): this package never starts servers itself."""

from __future__ import annotations

import typer

from evaluation.routing.cli import register as register_routing

app = typer.Typer(name="eval", help="Measure Tandem end to end on real engines (routing quality).",
                  no_args_is_help=True)
register_routing(app)
