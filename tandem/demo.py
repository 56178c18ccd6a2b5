"""`tandem demo`: the hybrid client on the task suite's real models, through routing scenarios.

1. build (or reuse) the task suite's teacher (the cloud model) and distilled student (the device model, a
   signed GGUF bundle with its calibrated router): ``export.tasks.build.ensure_task_models``;
2. start the cloud tier in this process on loopback: two CPU replicas of the teacher behind the gateway
   (``tandem.fleet.LocalFleet``), which also serves the student bundle for download;
3. start an ``AsyncHybridClient`` (routing mode auto) on a fresh "device" folder with no bundle, and play:
   - download: the bundle is fetched and verified in the background, the cloud answers meanwhile;
   - normal: a mixed-difficulty batch from the test split; the bundle's router sends the prompts it expects
     the device to get wrong to the cloud (the same batch also runs device-only and cloud-only, to compare);
   - low battery, low memory (signal overrides): work moves to the cloud;
   - replica killed mid-stream: the replica serving a streamed answer dies after the first chunk and the
     device continues the answer from the delivered text (no gap, nothing repeated);
   - cloud offline (the gateway stops): everything runs on the device;
4. print every request's route (where, why, switches, time to first token, right or wrong), the
   accuracy / cloud-share summary and the routing-quality plot's path; shut everything down;
5. unless ``--skip-real-model`` (or ``--smoke``): the hybrid client with a real pretrained model on both sides,
   in real language (``tandem.demo_real``).

Answers are greedy with the suite's answer budget and scored exactly (``TaskItem.check``).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import Progress, TaskID
from rich.table import Table

if TYPE_CHECKING:
    from export.tasks import TaskItem
    from export.tasks.build import TaskModels
    from sdk import AsyncHybridClient, Route
    from sdk.provisioning import ProvisionStatus
    from tandem.demo_real import RealDemoResult
    from tandem.fleet import LocalFleet

DEMO_API_KEY = "tdm_demo_key"
CLOUD_MODEL = "teacher"
DEVICE_BUNDLE = "student"
"""The bundle's name on the cloud's ModelDistribution service (``device.provision_bundle``)."""
BUNDLE_FORMAT = "gguf"
REPLICAS = 2
ENGINE_THREADS = 1
"""CPU threads of each cloud engine and of the device engine: ~1M-parameter models gain nothing from more,
and the machine is shared by the two replicas, the gateway, the device and the client."""
DEMO_SEED = 8
"""Seed of the test-split prompts (any seed: the test split never overlaps training or calibration)."""
PER_CELL = {"full": 3, "smoke": 1}
"""Prompts per (family, level) of the normal batch: 3 families x 5 levels x this."""
DOWNLOAD_PROMPTS = 3
"""At most this many prompts are asked while the bundle downloads (at least one)."""
SCENARIO_PROMPTS = 2
"""Prompts asked in each of the low-battery, low-memory and cloud-offline scenarios."""
KILL_ATTEMPTS = 3
"""Streams tried (longest cloud answers first) until one is cut by the kill before it ended."""
LOW_BATTERY_PERCENT = 7.0
LOW_MEMORY_BYTES = 16 << 20
READY_TIMEOUT_S = 120.0
LINK_WAIT_S = 10.0
POLL_S = 0.05
BREAKER_RESET_S = 2.0
HEALTH_INTERVAL_S = 0.25
PLOT_FILE = "routing-quality.png"
ANSWER_SHOWN_CHARS = 24
PIPE_WIDTH = 160
"""Console width when the output goes to a file or a pipe (which do not wrap): the route table stays whole."""


class DemoError(RuntimeError):
    """The demo could not set up a part (the message says which and what to do)."""


class Scenario(StrEnum):
    DOWNLOAD = "bundle download"
    NORMAL = "normal"
    BATTERY = "low battery"
    MEMORY = "low memory"
    KILLED = "replica killed"
    OFFLINE = "cloud offline"


@dataclass(frozen=True)
class Row:
    """One request of the demo: what was asked, how it was routed and what came back."""

    scenario: Scenario
    item: TaskItem
    route: Route
    text: str
    note: str = ""

    @property
    def correct(self) -> bool:
        return self.item.check(self.text)

    @property
    def used_cloud(self) -> bool:
        """The request called the cloud (it counts toward the cloud share even if it finished elsewhere)."""
        return any(attempt.side == "cloud" for attempt in self.route.attempts)


@dataclass(frozen=True)
class PolicyPoint:
    """One routing policy on the normal batch: a point of the accuracy-vs-cloud-share plot."""

    name: str
    accuracy: float
    cloud_share: float


@dataclass
class DemoResult:
    models: TaskModels
    cached: bool
    """The task models were found in the cache (nothing was built)."""
    rows: list[Row] = field(default_factory=list)
    device_only: list[bool] = field(default_factory=list)
    """Per prompt of the normal batch: right when answered on the device alone."""
    cloud_only: list[bool] = field(default_factory=list)
    download: ProvisionStatus | None = None
    kill_attempts: int = 0
    killed: Row | None = None
    """The stream whose replica was killed mid-way (None when every attempt ended before the kill)."""
    router_threshold: float | None = None
    plot: Path | None = None
    real: RealDemoResult | None = None
    """The real-model part's result (None when skipped)."""

    def scenario(self, scenario: Scenario) -> list[Row]:
        return [row for row in self.rows if row.scenario is scenario]

    def points(self) -> list[PolicyPoint]:
        """Device only, cloud only, the hybrid client (router) and the oracle, on the normal batch."""
        normal = self.scenario(Scenario.NORMAL)
        if not normal:
            return []
        count = len(normal)
        oracle = [device or cloud for device, cloud in zip(self.device_only, self.cloud_only, strict=True)]
        oracle_cloud = sum(not device and cloud for device, cloud in zip(self.device_only, self.cloud_only,
                                                                          strict=True))
        return [
            PolicyPoint("device only", sum(self.device_only) / count, 0.0),
            PolicyPoint("cloud only", sum(self.cloud_only) / count, 1.0),
            PolicyPoint("hybrid (router)", sum(row.correct for row in normal) / count,
                        sum(row.used_cloud for row in normal) / count),
            PolicyPoint("oracle", sum(oracle) / count, oracle_cloud / count),
        ]


def routing_quality_plot(result: DemoResult, out_dir: Path) -> Path | None:
    """Accuracy vs cloud-call share on the normal batch, written under ``out_dir``: the router's curve (a
    replay of the batch's device-only and cloud-only answers over the router's P(good), as `tandem eval
    routing` draws it for the whole test split) and the real runs as points. None when matplotlib (the
    ``dev``/``bench`` extra) is missing or the batch is empty."""
    normal = result.scenario(Scenario.NORMAL)
    if not normal:
        return None
    try:
        import numpy as np

        from evaluation.routing.plot import write_batch_plot
        from evaluation.routing.replay import Outcomes, sweep
    except ImportError:
        return None
    p_good = [row.route.difficulty.p_device_good for row in normal]
    if any(p is None for p in p_good):
        return None
    outcomes = Outcomes.build(result.device_only, result.cloud_only, p_good, [0.0] * len(normal),
                              [[] for _ in normal], [0.0] * len(normal), window=0)
    router = sweep(1.0 - np.asarray(p_good, dtype=np.float64), outcomes)
    points = {point.name: (point.cloud_share, point.accuracy) for point in result.points()}
    return write_batch_plot({"router (replay over its threshold)": router}, points,
                            f"The demo's batch: {len(normal)} prompts", out_dir / PLOT_FILE)


# -- the parts --------------------------------------------------------------------------------------------


def _progress(console: Console) -> Progress:
    """Rich's bar on a terminal; a line per step, and a heartbeat on long ones, in a log or a pipe."""
    from export.cli_support import step_progress

    return step_progress(console)


def ensure_models(console: Console, cache_dir: Path, size: str) -> tuple[TaskModels, bool]:
    """The task models of ``size`` under ``cache_dir / "tasks"``, built with progress when missing."""
    from export.tasks.build import REPORT_FILE, TaskModelsSpec, ensure_task_models
    from export.tasks.cli import RichBuildProgress

    root = cache_dir / "tasks"
    cached = (root / TaskModelsSpec.for_size(size).folder_name / REPORT_FILE).is_file()
    if cached:
        models = ensure_task_models(root, size=size)
        console.print(f"task models ({size}): cached in {escape(str(models.path))}")
        return models, True
    first_run = "about 8 minutes on 2 idle cores" if size == "full" else "under a minute"
    console.print(f"task models ({size}): building teacher, student, bundles and router once ({first_run}); "
                  "later runs reuse them")
    with _progress(console) as progress:
        reporter = RichBuildProgress(progress)
        models = ensure_task_models(root, size=size, progress=reporter)
        reporter.finish()
    return models, False


def demo_batch(size: str) -> list[TaskItem]:
    """The normal scenario's prompts: test-split items of every family and level, in a mixed order."""
    from export.tasks import generate_split

    items = generate_split("test", PER_CELL[size], seed=DEMO_SEED)
    random.Random(DEMO_SEED).shuffle(items)
    return items


async def wait_until(check: Callable[[], bool], timeout: float = LINK_WAIT_S) -> bool:
    """Poll ``check`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


class _Player:
    """Plays the scenarios with one client against one fleet, recording every request."""

    def __init__(self, client: AsyncHybridClient, fleet: LocalFleet, progress: Progress, result: DemoResult) -> None:
        self.client = client
        self.fleet = fleet
        self.progress = progress
        self.result = result

    async def _ask(self, item: TaskItem, mode: str | None = None) -> tuple[str, Route]:
        from evaluation.routing.run import ask

        response = await ask(self.client, item, mode)
        return response.choices[0].message.content, response.route

    async def ask(self, scenario: Scenario, item: TaskItem) -> Row:
        text, route = await self._ask(item)
        row = Row(scenario, item, route, text)
        self.result.rows.append(row)
        return row

    async def ask_all(self, scenario: Scenario, items: Sequence[TaskItem], task: TaskID) -> None:
        for item in items:
            await self.ask(scenario, item)
            self.progress.advance(task)

    # -- scenarios ----------------------------------------------------------------------------------------

    async def download(self, batch: Sequence[TaskItem]) -> None:
        provisioner = self.client.provisioner
        assert provisioner is not None
        task = self.progress.add_task("bundle download: the cloud answers meanwhile", total=None)
        for item in batch[:DOWNLOAD_PROMPTS]:
            if self.result.rows and provisioner.status.state == "ready":
                break
            await self.ask(Scenario.DOWNLOAD, item)
        if not await provisioner.wait_ready(READY_TIMEOUT_S):
            raise DemoError(f"the device bundle did not arrive within {READY_TIMEOUT_S:g} s "
                            f"({provisioner.status.last_error or provisioner.status.state})")
        if not await self.client.preload():
            raise DemoError("the downloaded bundle could not be loaded on the device; rerun the demo")
        self.result.download = provisioner.status
        estimator = self.client.orchestrator.estimator()
        self.result.router_threshold = estimator.threshold if estimator.router is not None else None
        status = provisioner.status
        self.progress.update(task, total=1, completed=1,
                             description=f"bundle download: {status.bytes_done:,} bytes, verified, loaded")

    async def normal(self, batch: Sequence[TaskItem]) -> None:
        task = self.progress.add_task("normal: routed by the bundle's router", total=len(batch))
        await self.ask_all(Scenario.NORMAL, batch, task)
        rows = self.result.scenario(Scenario.NORMAL)
        cloud = sum(row.used_cloud for row in rows)
        self.progress.update(task, description=f"normal: {len(rows) - cloud} on the device, {cloud} in the cloud, "
                                               f"{sum(row.correct for row in rows)} right")
        comparisons = (("device only", "local_only", self.result.device_only),
                       ("cloud only", "cloud_only", self.result.cloud_only))
        for label, mode, answers in comparisons:
            task = self.progress.add_task(f"the same batch, {label} (for comparison)", total=len(batch))
            for item in batch:
                text, _ = await self._ask(item, mode)
                answers.append(item.check(text))
                self.progress.advance(task)
            self.progress.update(task, description=f"the same batch, {label}: {sum(answers)} right")

    def _picked(self, batch: Sequence[TaskItem], *, hard: bool) -> list[TaskItem]:
        """Prompts the router judged hard (or easy) in the normal batch, else any: a scenario then shows the
        signal moving work the router would have placed on the other side."""
        chosen = [row.item for row in self.result.scenario(Scenario.NORMAL) if row.route.difficulty.hard is hard]
        return (chosen or list(batch))[:SCENARIO_PROMPTS]

    async def low_battery(self, batch: Sequence[TaskItem]) -> None:
        items = self._picked(batch, hard=False)
        task = self.progress.add_task(f"low battery ({LOW_BATTERY_PERCENT:g} %, not charging)", total=len(items))
        self.client.signals.override(battery_percent=LOW_BATTERY_PERCENT, charging=False)
        try:
            await self.ask_all(Scenario.BATTERY, items, task)
        finally:
            self.client.signals.clear_override("battery_percent", "charging")

    async def low_memory(self, batch: Sequence[TaskItem]) -> None:
        items = self._picked(batch, hard=False)
        task = self.progress.add_task(f"low memory ({LOW_MEMORY_BYTES >> 20} MiB free)", total=len(items))
        self.client.signals.override(available_memory_bytes=LOW_MEMORY_BYTES)
        try:
            await self.ask_all(Scenario.MEMORY, items, task)
        finally:
            self.client.signals.clear_override("available_memory_bytes")

    def _kill_candidates(self, batch: Sequence[TaskItem]) -> tuple[list[TaskItem], str | None]:
        """The prompts with the longest cloud answers (the most time to cut the stream), routed to the cloud
        by the router; when it sent none there, any prompt with prefer_cloud."""
        cloud_rows = [row for row in self.result.scenario(Scenario.NORMAL) if row.route.side == "cloud"
                      and not row.route.switches]
        if cloud_rows:
            cloud_rows.sort(key=lambda row: len(row.text), reverse=True)
            return [row.item for row in cloud_rows[:KILL_ATTEMPTS]], None
        return list(batch[:KILL_ATTEMPTS]), "prefer_cloud"

    async def _stream_and_kill(self, item: TaskItem, mode: str | None) -> tuple[str, Route, int | None]:
        """Stream ``item``; on the first chunk kill the replica serving it. Returns the text, the route and
        the killed replica (None when no replica was streaming it any more)."""
        from export.tasks.answers import ANSWER_MAX_TOKENS

        stream = await self.client.chat.completions.create(messages=item.chat(), max_tokens=ANSWER_MAX_TOKENS,
                                                           temperature=0, stream=True, mode=mode)
        pieces: list[str] = []
        killed: int | None = None
        async with stream:
            async for chunk in stream:
                if not pieces:
                    serving = self.fleet.streaming_replicas()
                    if serving:
                        killed = serving[0]
                        await self.fleet.kill_replica(killed)  # the replica dies under the stream
                pieces.append(chunk.choices[0].delta.content or "")
        return "".join(pieces), stream.route, killed

    async def replica_killed(self, batch: Sequence[TaskItem]) -> None:
        candidates, mode = self._kill_candidates(batch)
        task = self.progress.add_task("replica killed mid-stream", total=len(candidates))
        for item in candidates:
            self.result.kill_attempts += 1
            text, route, killed = await self._stream_and_kill(item, mode)
            if killed is not None:
                await self.fleet.restart_replica(killed)
            broken = any(switch.reason == "stream_broken" for switch in route.switches)
            note = "" if broken else ("the answer had left the replica before the first chunk arrived"
                                      if killed is None else "the stream ended before the kill reached it")
            row = Row(Scenario.KILLED, item, route, text, note)
            self.result.rows.append(row)
            self.progress.advance(task)
            if broken:
                self.result.killed = row
                break
        self.progress.update(task, completed=len(candidates))

    async def cloud_offline(self, batch: Sequence[TaskItem]) -> None:
        from sdk.signals import Link

        items = self._picked(batch, hard=True)
        task = self.progress.add_task("cloud offline (the gateway stops)", total=len(items))
        await self.fleet.stop_gateway()
        await wait_until(lambda: self.client.signals.current().cloud.state is Link.DOWN)
        await self.ask_all(Scenario.OFFLINE, items, task)


async def _play(console: Console, models: TaskModels, batch: Sequence[TaskItem], result: DemoResult) -> None:
    from cloud_service.config import DistributionConfig
    from cloud_service.engines.cpu import CpuEngineOptions
    from sdk import AsyncHybridClient, Policy
    from sdk.policy import CloudSettings, DeviceSettings, RetrySettings, RoutingSettings
    from tandem.fleet import LocalFleet

    bundle = models.bundles[BUNDLE_FORMAT]
    fleet = LocalFleet(models.teacher, model=CLOUD_MODEL, api_key=DEMO_API_KEY, replicas=REPLICAS,
                       engine_options=CpuEngineOptions(threads=ENGINE_THREADS),
                       distribution=DistributionConfig({DEVICE_BUNDLE: (bundle,)}, (models.public_key,)))
    with _progress(console) as progress, tempfile.TemporaryDirectory(prefix="tandem-demo-device-") as device:
        task = progress.add_task(f"cloud: {REPLICAS} CPU replicas of the teacher behind the gateway", total=None)
        async with fleet:
            progress.update(task, total=1, completed=1, description=f"cloud: {REPLICAS} replicas of the teacher "
                            f"behind the gateway at {fleet.target}")
            policy = Policy(
                routing=RoutingSettings(mode="auto"),
                device=DeviceSettings(bundle=Path(device) / DEVICE_BUNDLE, trusted_keys=(models.public_key,),
                                      provision_bundle=DEVICE_BUNDLE, threads=ENGINE_THREADS),
                cloud=CloudSettings(target=fleet.target, model=CLOUD_MODEL, api_key=DEMO_API_KEY,
                                    tenant=fleet.tenant, health_interval_s=HEALTH_INTERVAL_S),
                retry=RetrySettings(breaker_reset_s=BREAKER_RESET_S),
            )
            async with AsyncHybridClient(policy) as client:
                player = _Player(client, fleet, progress, result)
                await player.download(batch)
                await player.normal(batch)
                await player.low_battery(batch)
                await player.low_memory(batch)
                await player.replica_killed(batch)
                await player.cloud_offline(batch)


# -- the report -------------------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"


def route_cell(route: Route, note: str = "") -> str:
    """Where a request ran, with each switch on its own line, then ``note`` (e.g. why a kill attempt did not cut
    it), as Rich markup."""
    lines = [" -> ".join(str(side) for side in route.sides) or str(route.side)]
    lines += [f"{s.kind}: {s.reason} after {s.after_tokens} token(s)" for s in route.switches]
    if note:
        lines.append(f"[dim]{escape(note)}[/]")
    return "\n".join(lines)


def _answer_cell(row: Row) -> str:
    answer = row.text.strip()
    answer = answer if len(answer) <= ANSWER_SHOWN_CHARS else answer[:ANSWER_SHOWN_CHARS - 1] + "…"
    if row.correct:
        return f"[green]✓[/] {escape(answer)}"
    return f"[red]✗[/] {escape(repr(answer))} (want {escape(row.item.answer)})"


def _route_table(rows: Sequence[Row]) -> Table:
    table = Table(title="every request: where it ran and why (p(ok): the router's P(the device answers right))",
                  box=box.SIMPLE_HEAD)
    for column in ("scenario", "prompt", "route", "reasons", "p(ok)", "TTFT", "answer"):
        table.add_column(column, overflow="fold", no_wrap=column == "reasons")
    for index, row in enumerate(rows):
        route = row.route
        p_good = route.difficulty.p_device_good
        ttft = f"{route.timings.ttft_s * 1000:.0f} ms" if route.timings.ttft_s is not None else "-"
        first = index == 0 or rows[index - 1].scenario is not row.scenario
        last = index + 1 == len(rows) or rows[index + 1].scenario is not row.scenario
        table.add_row(str(row.scenario) if first else "", f"[dim]L{row.item.level}[/] {escape(row.item.user_prompt)}",
                      route_cell(row.route, row.note), ", ".join(route.reasons),
                      "-" if p_good is None else f"{p_good:.2f}", ttft,
                      _answer_cell(row), end_section=last)
    return table


def _summary_table(result: DemoResult) -> Table:
    from export.tasks import LEVELS

    normal = result.scenario(Scenario.NORMAL)
    table = Table(title=f"the normal batch ({len(normal)} test-split prompts): accuracy by difficulty level")
    for column in ("level", "prompts", "sent to the cloud", "device only", "cloud only", "hybrid"):
        table.add_column(column, justify="right")

    def add(label: str, picked: list[int], **style: Any) -> None:
        if not picked:
            return
        count = len(picked)
        table.add_row(label, str(count), _pct(sum(normal[i].used_cloud for i in picked) / count),
                      _pct(sum(result.device_only[i] for i in picked) / count),
                      _pct(sum(result.cloud_only[i] for i in picked) / count),
                      _pct(sum(normal[i].correct for i in picked) / count), **style)

    for level in LEVELS:
        add(str(level), [i for i, row in enumerate(normal) if row.item.level == level])
    add("all", list(range(len(normal))), style="bold")
    return table


def show(console: Console, result: DemoResult) -> None:
    """The per-request routing table, the replica-kill panel and the accuracy / cloud-share summary."""
    console.print(_route_table(result.rows))
    killed = result.killed
    if killed is not None:
        cut = killed.route.switches[0].after_chars
        console.print(Panel(
            f"[dim]{escape(repr(killed.text[:cut]))}[/] + [bold]{escape(repr(killed.text[cut:]))}[/]  "
            f"(expected {escape(repr(killed.item.answer))}: {'right' if killed.correct else 'wrong'})",
            title="replica killed mid-stream: the cloud's part (dim), continued on the device", expand=False))
        if "difficulty_high" in killed.route.reasons:
            console.print("[dim]The continuation is the device model's own: the router had sent this prompt to the "
                          "cloud because the device often gets such prompts wrong.[/]")
    else:
        console.print(f"[yellow]replica killed mid-stream: not shown: in {result.kill_attempts} attempt(s) the "
                      "answer was complete before the kill could cut it (the models answer in milliseconds).[/]")
    if result.download is not None:
        status = result.download
        console.print(f"bundle download: {status.bytes_done:,} bytes, {status.attempts} attempt(s), "
                      f"state {status.state}")
    console.print(_summary_table(result))
    points = {point.name: point for point in result.points()}
    if points:
        hybrid, cloud, oracle = points["hybrid (router)"], points["cloud only"], points["oracle"]
        threshold = "-" if result.router_threshold is None else f"{result.router_threshold:.2f}"
        kept = f", {_pct(hybrid.accuracy / cloud.accuracy)} of cloud-only accuracy" if cloud.accuracy else ""
        console.print(
            f"normal batch: device only {_pct(points['device only'].accuracy)}, cloud only {_pct(cloud.accuracy)}, "
            f"hybrid {_pct(hybrid.accuracy)} with {_pct(hybrid.cloud_share)} of the requests in the cloud (router "
            f"threshold {threshold}{kept}); an oracle router would reach {_pct(oracle.accuracy)} at "
            f"{_pct(oracle.cloud_share)}.")
    rows = result.rows
    right = sum(row.correct for row in rows)
    cloud_calls = sum(row.used_cloud for row in rows)
    switches = sum(len(row.route.switches) for row in rows)
    console.print(f"overall: {len(rows)} requests, {right} right ({_pct(right / len(rows))}), "
                  f"{cloud_calls} called the cloud ({_pct(cloud_calls / len(rows))}), {len(rows) - cloud_calls} "
                  f"stayed on the device; {switches} switch(es), no answer lost.")
    if result.plot is not None:
        console.print(f"routing-quality plot: {escape(str(result.plot))}")
    else:
        console.print("routing-quality plot: none (it needs matplotlib: pip install 'tandem-inference[bench]'); "
                      "`tandem eval routing` measures every policy on the whole test split")


def run_demo(console: Console, cache_dir: Path, *, smoke: bool = False, real_model: bool | None = None) -> DemoResult:
    """Build or reuse the task models, play the scenarios on a local cloud and a fresh device, print the
    routes and the summary, then (``real_model``; by default unless ``smoke``) the same with a real pretrained
    model (``tandem.demo_real``); returns what was measured."""
    size = "smoke" if smoke else "full"
    console.rule("[bold]Tandem demo")
    if smoke:
        console.print("[yellow]Smoke size: the models are trained for seconds and answer mostly wrong; the "
                      "routing, download, failover and scenarios are the real ones.[/]")
    models, cached = ensure_models(console, cache_dir, size)
    report = models.report
    console.print(f"cloud model: the teacher ({report['teacher']['parameters']:,} parameters); device model: the "
                  f"distilled student ({report['student']['parameters']:,} parameters, {BUNDLE_FORMAT} bundle "
                  f"with its calibrated router)")
    batch = demo_batch(size)
    result = DemoResult(models, cached)
    asyncio.run(_play(console, models, batch, result))
    result.plot = routing_quality_plot(result, cache_dir / "demo")
    show(console, result)
    if real_model if real_model is not None else not smoke:
        from tandem.demo_real import run_real_model_demo

        result.real = run_real_model_demo(console, cache_dir)
    return result
