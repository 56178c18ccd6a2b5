"""Progress off a terminal: a line per step as it starts and as it changes, and a heartbeat with the count and
ETA on a long step, so a log or a pipe (`make demo 2>&1 | cat`) never looks like a hang; nothing extra on a
terminal."""

from __future__ import annotations

import io

from rich.console import Console

from export.cli_support import HEARTBEAT_S, MIN_LINE_S, step_progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _progress(terminal: bool):
    out = io.StringIO()
    progress = step_progress(Console(file=out, force_terminal=terminal, width=120))
    clock = Clock()
    progress.get_time = clock  # type: ignore[method-assign]
    return progress, out, clock


def test_off_a_terminal_each_step_prints_a_line_and_a_long_one_a_heartbeat_with_its_eta():
    progress, out, clock = _progress(terminal=False)
    with progress:
        task = progress.add_task("train teacher (1/5)...", total=None)
        progress.update(task, description="train teacher: loss 5.1")  # at once: too soon for a line
        clock.now += MIN_LINE_S
        progress.update(task, completed=1, total=100, description="train teacher: step 1/100")
        for step in range(2, 41):
            clock.now += 1.0
            progress.update(task, completed=step, total=100)  # same description: quiet until the heartbeat
        clock.now += HEARTBEAT_S
        progress.update(task, completed=41, total=100)
        progress.update(task, completed=100, total=100, description="train teacher: done")  # an end always says so
        progress.add_task("export bundles (2/5)...", total=None)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert [line.split("] ", 1)[1] for line in lines[:2]] == ["train teacher (1/5)...", "train teacher: step 1/100"]
    assert not any("loss 5.1" in line for line in lines)
    heartbeats = [line for line in lines if "still running" in line]
    assert len(heartbeats) == 2  # 30 s after the last line, then 30 s after that one
    assert "/100" in heartbeats[-1] and "ETA" in heartbeats[-1]
    assert any(line.endswith("] train teacher: done") for line in lines)
    assert any(line.endswith("] export bundles (2/5)...") for line in lines)  # (Rich prints the bars at exit too)


def test_on_a_terminal_only_the_bar_is_drawn():
    progress, out, clock = _progress(terminal=True)
    with progress:
        task = progress.add_task("convert", total=None)
        clock.now += 2 * HEARTBEAT_S
        progress.update(task, description="quantize")
    assert "still running" not in out.getvalue() and "] convert" not in out.getvalue()
