"""ensure_task_models: the suite's teacher ("cloud") and distilled student ("device"), its signed bundles with
calibrated routers, and their measured accuracy, built once and then reused from a cache.

    models = ensure_task_models(cache_dir, size="full")     # minutes the first time, instant afterwards
    models.teacher, models.student                          # Hugging Face folders
    models.bundles["gguf"], models.bundles["onnx"]          # signed student bundles, each with router.json
    models.public_key                                       # PEM file that verifies the bundles
    models.report["teacher"]["accuracy"]["levels"]          # per difficulty level, on the test split

Sizes (``TaskModelsSpec.full()`` / ``.small()`` / ``.smoke()``): "full" is every family and level with a ~95 %
teacher; "small" builds in about a minute on fewer families and levels, with a student that is clearly worse on
the hard items (routing tests); "smoke" runs the pipeline in seconds and learns almost nothing.

One build lives in ``cache_dir/<size>-<digest>/``; the digest covers RECIPE_VERSION and the whole spec, so a
changed recipe builds anew beside the old one and an unchanged one is never rebuilt:

    keys/tasks.key, keys/tasks.pub      the signing key pair of these bundles (made for this cache)
    data/*.jsonl                        training conversations of the teacher and of the student
    untrained/                          the teacher's random initialisation (config, weights, tokenizer)
    teacher/  student/                  trained models (`tandem export distill` output folders)
    bundles/student-gguf-<q>/  bundles/student-onnx-<q>/
    report.json                         written last: its presence marks a complete build

Every part is written atomically (``export.atomic``), so an interrupted build resumes at the first missing
part (the distillation runs even from their last checkpoint); a lock file serialises concurrent builders.
Training runs on CPU in a child process with a fixed thread count (``export.tasks.training_process``): the same
spec gives the same weights on one machine under any load.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.atomic import exclusive_lock, staged_folder
from export.errors import SpecError, TaskBuildError
from export.tasks.families import FAMILIES, LEVELS
from export.tasks.models import ModelShape
from export.tasks.suite import TaskItem, generate_split, training_stream
from export.tasks.training_process import TRAINING_THREADS, run_training_stage

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from export.distill.trainer import StepStats

RECIPE_VERSION = 8
"""Bump when the code that shapes the models or their bundles changes for an unchanged spec (suite, tokenizer,
training, calibration). 7: routers carry the confidence cascade's calibrated cutoff. 8: training threads fixed,
7-bit ONNX INT8 weights."""
SIZES = ("full", "small", "smoke")
STAGES = ("data", "teacher", "student", "bundles", "evaluate", "router")
REPORT_FILE = "report.json"
LOCK_SUFFIX = ".lock"
ADAM_BETA2 = 0.98
"""Measured on the task suite: faster than AdamW's default 0.999 for these short runs."""
DIGEST_OPTIONAL = ("families", "levels")
"""Spec fields added after RECIPE_VERSION 6 shipped: hashed only when set (see ``TaskModelsSpec.to_dict``)."""
TEACHER_CELL_MIN = {"full": 0.5}
"""Per size: the teacher accuracy every (family, level) cell of the test split must reach, or the build stops
(the full teacher measures 94-100 % per level; a build whose teacher never learned reversal past level 2 scored
0-10 % there and made every routing figure meaningless). Small and smoke builds are measured by their tests."""
KEY_NAME = "tasks"
EVAL_TEXT_ITEMS = 64
"""Calibration conversations (with answers) that make the held-out text of the bundles' quality gates."""


@dataclass(frozen=True)
class TrainingPlan:
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int

    @property
    def examples(self) -> int:
        """Training conversations written for the plan: one epoch covers every step."""
        return self.steps * self.batch_size


@dataclass(frozen=True)
class TaskModelsSpec:
    """Everything that determines the built models and bundles (hashed into the cache folder's name)."""

    size: str
    teacher: ModelShape
    teacher_training: TrainingPlan
    student_layers: tuple[int, ...]
    """Teacher layers the student keeps (``tandem export distill --keep-layers``). Measured: random-initialised
    students (2 layers, hidden 64 or 128) did not learn reversal within minutes of distillation; one started
    from the teacher's embeddings and two of its layers learns in a few hundred steps and fails on the longest
    inputs. One kept layer (3.5x smaller) lost addition even on one-digit numbers."""
    student_training: TrainingPlan
    calibration_per_cell: int
    """Calibration items per (family, level)."""
    test_per_cell: int
    """Test items per (family, level) for the accuracy report."""
    alpha_kl: float = 0.7
    alpha_ce: float = 0.3
    temperature: float = 2.0
    seq_len: int = 96
    gguf_quantization: str = "q8_0"
    onnx_quantization: str = "fp32"
    gate_max_increase_pct: float = 2.0
    """Quality gate of the quantized bundles (perplexity increase over the student, in percent)."""
    seed: int = 0
    families: tuple[str, ...] | None = None
    """Task families the models are trained, measured and calibrated on (None: every family of the suite)."""
    levels: tuple[int, ...] | None = None
    """Difficulty levels likewise (None: all of LEVELS); training covers every size between the lowest and the
    highest of them."""

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise SpecError(f"size={self.size!r} is not one of {', '.join(SIZES)}")
        if self.families is not None and (not self.families or len(set(self.families)) != len(self.families)
                                          or not set(self.families) <= set(FAMILIES)):
            raise SpecError(f"families={self.families!r} must name distinct families of the suite: "
                            f"{', '.join(FAMILIES)}")
        if self.levels is not None and (not self.levels or list(self.levels) != sorted(set(self.levels))
                                        or not set(self.levels) <= set(LEVELS)):
            raise SpecError(f"levels={self.levels!r} must be some of {LEVELS}, distinct and in increasing order")
        if self.calibration_per_cell < 1 or self.test_per_cell < 1:
            raise SpecError("calibration_per_cell and test_per_cell must be positive")
        if not self.student_layers or not all(0 <= i < self.teacher.layers for i in self.student_layers):
            raise SpecError(
                f"student_layers={self.student_layers} must name teacher layers (0..{self.teacher.layers - 1})"
            )

    @classmethod
    def full(cls) -> TaskModelsSpec:
        """A 1.1M-parameter teacher (>= 90 % on the test split) and a student of two of its four layers
        (0.56M parameters); about 10 minutes on 2 idle cores."""
        return cls(
            size="full",
            teacher=ModelShape(layers=4, hidden=128, heads=4, intermediate=512),
            teacher_training=TrainingPlan(steps=3500, batch_size=32, lr=2e-3, warmup_steps=50),
            student_layers=(0, 3),
            student_training=TrainingPlan(steps=600, batch_size=32, lr=2e-3, warmup_steps=30),
            calibration_per_cell=30,
            test_per_cell=30,
        )

    @classmethod
    def small(cls) -> TaskModelsSpec:
        """A real difficulty signal in about a minute on 2 cores, for tests. Reversal and sorting up to level 3
        only (addition and the longer levels took the full teacher thousands of steps): a two-layer teacher
        (0.26M parameters) solves them; the student (0.15M) keeps its first layer and is distilled for only a few steps,
        so it stays right on short items and falls behind on the longest, and its router tells them apart.

        Ten student steps (twenty left the student within 0.075 of the teacher on level 3 where torch ran its
        AVX2 kernels, as on CPUs without AVX-512: the trajectory depends on the CPU's rounding). Measured for seed
        0 with torch's AVX-512 and AVX2 kernels (test split): teacher 1.0 / 0.975 on level 1 and 0.975 / 0.7625 on
        level 3; student (GGUF) 0.025 / 0.1375 below it on level 1 and 0.41 / 0.2 below it on level 3; router
        AUROC 0.87-0.91 (all of the calibration prompts). With twenty steps, seeds 0-4 on AVX-512 had measured
        teacher 0.89-1.0 / 0.74-0.99 and held-out AUROC 0.74-0.91.
        Eight attention heads, not two or four: the teacher then learned reversal within 200-400 steps in every
        seed tried, where fewer heads stalled for 600 steps or more in some."""
        return cls(
            size="small",
            teacher=ModelShape(layers=2, hidden=128, heads=8, intermediate=128),
            teacher_training=TrainingPlan(steps=1000, batch_size=32, lr=3e-3, warmup_steps=30),
            student_layers=(0,),
            student_training=TrainingPlan(steps=10, batch_size=32, lr=3e-3, warmup_steps=5),
            calibration_per_cell=100,
            test_per_cell=40,
            seq_len=64,
            families=("reverse", "sort"),
            levels=(1, 2, 3),
        )

    @classmethod
    def smoke(cls) -> TaskModelsSpec:
        """The whole pipeline in well under a minute, for tests; the models learn little."""
        return cls(
            size="smoke",
            teacher=ModelShape(layers=2, hidden=32, heads=2, intermediate=64),
            teacher_training=TrainingPlan(steps=12, batch_size=8, lr=3e-3, warmup_steps=2),
            student_layers=(0,),
            student_training=TrainingPlan(steps=6, batch_size=8, lr=3e-3, warmup_steps=1),
            calibration_per_cell=2,
            test_per_cell=1,
        )

    @classmethod
    def for_size(cls, size: str) -> TaskModelsSpec:
        if size not in SIZES:
            raise SpecError(f"size={size!r} is not one of {', '.join(SIZES)}")
        return {"full": cls.full, "small": cls.small, "smoke": cls.smoke}[size]()

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (hashed, and written into the report). The fields of DIGEST_OPTIONAL are left
        out while they hold their default, so specs written before those fields existed keep their digest."""
        data = asdict(self)
        for name in DIGEST_OPTIONAL:
            if data[name] is None:
                del data[name]
        return data

    def digest(self) -> str:
        payload = json.dumps({"recipe": RECIPE_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def split(self, split: str, per_cell: int) -> list[TaskItem]:
        """``per_cell`` items of ``split`` for each of the spec's (family, level) cells."""
        return generate_split(split, per_cell, seed=self.seed, families=self.families, levels=self.levels)

    @property
    def folder_name(self) -> str:
        return f"{self.size}-{self.digest()[:12]}"


@dataclass(frozen=True)
class TaskModels:
    path: Path
    teacher: Path
    student: Path
    bundles: dict[str, Path]
    """"gguf" and "onnx" -> the student's signed bundle."""
    public_key: Path
    """PEM public key that verifies the bundles."""
    private_key: Path
    report: dict[str, Any] = field(repr=False)


class TaskBuildProgress:
    """What a build reports (the CLI draws it); the default ignores everything."""

    def stage(self, name: str) -> None:
        """A stage of STAGES starts (or is found in the cache)."""

    def update(self, done: int, total: int | None, detail: str = "") -> None:
        """Progress within the current stage."""


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/tandem/tasks or ~/.cache/tandem/tasks."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tandem" / "tasks"


# -- small helpers ------------------------------------------------------------------------------------------


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    temporary.write_bytes(data)
    temporary.replace(path)


def _signing_key(keys: Path) -> Ed25519PrivateKey:
    from export.signing_keys import generate_keypair, load_private_key

    private = keys / f"{KEY_NAME}.key"
    if not private.is_file():
        with staged_folder(keys, overwrite=True) as stage:
            generate_keypair(stage / KEY_NAME)
    return load_private_key(private)


def _write_conversations(path: Path, items: Iterator[Any] | list[Any], count: int) -> None:
    lines = []
    for index, item in enumerate(items):
        if index >= count:
            break
        lines.append(json.dumps({"messages": item.training_chat()}))
    _write_atomic(path, ("\n".join(lines) + "\n").encode())


def _step_reporter(progress: TaskBuildProgress) -> Callable[[StepStats], None]:
    def on_step(stats: StepStats) -> None:
        progress.update(stats.step, stats.total_steps, f"loss {stats.loss:.3f}")

    return on_step


# -- the stages ---------------------------------------------------------------------------------------------


def _data(spec: TaskModelsSpec, data: Path) -> tuple[Path, Path]:
    teacher_file, student_file = data / "teacher-train.jsonl", data / "student-train.jsonl"
    if not teacher_file.is_file():
        stream = training_stream(seed=spec.seed, families=spec.families, levels=spec.levels)
        _write_conversations(teacher_file, stream, spec.teacher_training.examples)
    if not student_file.is_file():
        stream = training_stream(seed=spec.seed + 1, families=spec.families, levels=spec.levels)
        _write_conversations(student_file, stream, spec.student_training.examples)
    return teacher_file, student_file


def _distill(
    spec: TaskModelsSpec, source: Path, data: Path, out: Path, plan: TrainingPlan, student: Any, *,
    alpha_kl: float, alpha_ce: float, progress: TaskBuildProgress,
) -> None:
    from export.distill import DistillConfig, distill

    config = DistillConfig(
        teacher=source, data=data, out=out, student=student, seq_len=spec.seq_len, batch_size=plan.batch_size,
        steps=plan.steps, lr=plan.lr, warmup_steps=plan.warmup_steps, weight_decay=0.01, adam_beta2=ADAM_BETA2,
        temperature=spec.temperature, alpha_kl=alpha_kl, alpha_ce=alpha_ce, seed=spec.seed, eval_fraction=0.02,
        eval_max_windows=64, text_mode="chat", checkpoint_every=max(50, plan.steps // 5),
    )
    distill(config, on_step=_step_reporter(progress))


def train_teacher(spec: TaskModelsSpec, root: Path, data: Path, progress: TaskBuildProgress) -> None:
    """Train ``root/teacher`` (run in export.tasks.training_process's child)."""
    from export.distill import StudentSpec
    from export.tasks.models import write_untrained_model

    untrained = root / "untrained"
    if not untrained.is_dir():
        with staged_folder(untrained, overwrite=True) as stage:
            write_untrained_model(stage, spec.teacher, spec.seed)
    # No teacher term: plain cross-entropy on the answers, from a fresh initialisation of the same shape.
    _distill(spec, untrained, data, root / "teacher", spec.teacher_training, StudentSpec(),
             alpha_kl=0.0, alpha_ce=1.0, progress=progress)


def train_student(spec: TaskModelsSpec, root: Path, data: Path, progress: TaskBuildProgress) -> None:
    """Distill ``root/student`` from the teacher (run in export.tasks.training_process's child)."""
    from export.distill import StudentSpec

    student = StudentSpec(keep_layers=spec.student_layers)
    _distill(spec, root / "teacher", data, root / "student", spec.student_training, student,
             alpha_kl=spec.alpha_kl, alpha_ce=spec.alpha_ce, progress=progress)


def _bundle_paths(spec: TaskModelsSpec, root: Path) -> dict[str, Path]:
    return {
        "gguf": root / "bundles" / f"student-gguf-{spec.gguf_quantization}",
        "onnx": root / "bundles" / f"student-onnx-{spec.onnx_quantization}",
    }


def _bundles(spec: TaskModelsSpec, root: Path, key: Ed25519PrivateKey, progress: TaskBuildProgress) -> None:
    from export.gguf.pipeline import build_gguf_bundle
    from export.onnx.bundle import build_onnx_bundle
    from export.quality import Evaluation, QualityGate
    from export.source import SourceModel

    source = SourceModel.open(root / "student")
    tokenizer = source.load_tokenizer()
    conversations = [item.training_chat() for item in spec.split("calibration", 1)]
    text = "".join(tokenizer.apply_chat_template(conversations[:EVAL_TEXT_ITEMS], tokenize=False))
    evaluation = Evaluation(text, QualityGate(spec.gate_max_increase_pct), window=128, max_windows=16)
    paths = _bundle_paths(spec, root)
    builders = {
        "gguf": (build_gguf_bundle, spec.gguf_quantization),
        "onnx": (build_onnx_bundle, spec.onnx_quantization),
    }
    for done, (fmt, (build, quantization)) in enumerate(builders.items()):
        if paths[fmt].is_dir():
            continue
        progress.update(done, len(builders), f"{fmt} {quantization}")
        unquantized = quantization in ("f32", "f16", "fp32")
        build(source, paths[fmt], quantization, key, evaluation=None if unquantized else evaluation,
              name=f"tasks-student-{fmt}-{quantization}", overwrite=True, tool_version=f"tasks-recipe-{RECIPE_VERSION}")
    progress.update(len(builders), len(builders))


def _evaluate(spec: TaskModelsSpec, root: Path, key: Ed25519PrivateKey, progress: TaskBuildProgress) -> dict:
    from export.tasks.answers import accuracy_table, bundle_answers, model_answers

    items = spec.split("test", spec.test_per_cell)
    total = len(items) * 3
    teacher = model_answers(root / "teacher", items, on_item=lambda done, _: progress.update(done, total, "teacher"))
    results = {"teacher": accuracy_table(items, teacher), "student": {}}
    for offset, (fmt, path) in enumerate(_bundle_paths(spec, root).items(), start=1):
        answers = bundle_answers(
            path, [key.public_key()], items,
            on_item=lambda done, _, offset=offset, fmt=fmt: progress.update(offset * len(items) + done, total, fmt),
        )
        results["student"][fmt] = accuracy_table(items, answers)
    return results


def _calibrate(spec: TaskModelsSpec, root: Path, key: Ed25519PrivateKey, progress: TaskBuildProgress) -> dict:
    from edge_runtime.router import ROUTER_FILE
    from export.calibrate.run import calibrate_bundle

    items = spec.split("calibration", spec.calibration_per_cell)
    metrics = {}
    for fmt, path in _bundle_paths(spec, root).items():
        router = json.loads((path / ROUTER_FILE).read_text()) if (path / ROUTER_FILE).is_file() else {}
        if "cascade" in router:  # calibrated by this recipe before an interruption: read what it measured
            metrics[fmt] = router["metrics"]
            continue
        result = calibrate_bundle(
            path, key, items=items, seed=spec.seed,
            on_item=lambda done, total, fmt=fmt: progress.update(done, total, f"{fmt}: calibration prompts"),
        )
        metrics[fmt] = result.router.metrics
    return metrics


def _check_teacher_learned(spec: TaskModelsSpec, root: Path, teacher: dict[str, Any]) -> None:
    """Stop a build whose teacher falls below TEACHER_CELL_MIN in any (family, level) cell."""
    floor = TEACHER_CELL_MIN.get(spec.size)
    if floor is None:
        return
    short = [f"{family} level {level}: {share:.0%}" for family, table in sorted(teacher["families"].items())
             for level, share in sorted(table["levels"].items()) if share < floor]
    if short:
        raise TaskBuildError(
            f"the {spec.size} teacher did not learn what it is meant to solve (below {floor:.0%} on the test "
            f"split: {'; '.join(short)}). The models under {root} are not usable for routing; the build is "
            "deterministic on this machine, so rebuilding repeats it: report it with this message and the "
            "machine's CPU model, or build with another seed (TaskModelsSpec.full() with seed=N)."
        )


def _parameters(folder: Path) -> int:
    from export.safetensors_info import parameter_count

    return parameter_count(folder)


def _models(root: Path, spec: TaskModelsSpec, report: dict[str, Any]) -> TaskModels:
    keys = root / "keys"
    return TaskModels(
        path=root, teacher=root / "teacher", student=root / "student", bundles=_bundle_paths(spec, root),
        public_key=keys / f"{KEY_NAME}.pub", private_key=keys / f"{KEY_NAME}.key", report=report,
    )


def ensure_task_models(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    size: str = "full",
    spec: TaskModelsSpec | None = None,
    progress: TaskBuildProgress | None = None,
) -> TaskModels:
    """The task models of ``size`` (or of an explicit ``spec``) under ``cache_dir`` (default:
    ``default_cache_dir()``), built first when the cache lacks them. See the module docstring."""
    spec = spec or TaskModelsSpec.for_size(size)
    progress = progress or TaskBuildProgress()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = root / spec.folder_name
    report_path = root / REPORT_FILE
    if report_path.is_file():
        return _models(root, spec, json.loads(report_path.read_text()))
    with exclusive_lock(root.with_name(root.name + LOCK_SUFFIX)), _torch_threads(TRAINING_THREADS):
        if report_path.is_file():  # another process finished it while we waited
            return _models(root, spec, json.loads(report_path.read_text()))
        started = time.perf_counter()
        seconds: dict[str, float] = {}

        def timed(name: str, run: Callable[[], Any]) -> Any:
            progress.stage(name)
            begun = time.perf_counter()
            value = run()
            seconds[name] = round(time.perf_counter() - begun, 2)
            return value

        key = _signing_key(root / "keys")
        teacher_data, student_data = timed("data", lambda: _data(spec, root / "data"))
        if not (root / "teacher").is_dir():
            timed("teacher", lambda: run_training_stage("teacher", spec, root, teacher_data, progress))
        if not (root / "student").is_dir():
            timed("student", lambda: run_training_stage("student", spec, root, student_data, progress))
        timed("bundles", lambda: _bundles(spec, root, key, progress))
        accuracy = timed("evaluate", lambda: _evaluate(spec, root, key, progress))
        _check_teacher_learned(spec, root, accuracy["teacher"])
        routers = timed("router", lambda: _calibrate(spec, root, key, progress))
        report = {
            "recipe_version": RECIPE_VERSION,
            "spec": spec.to_dict(),
            "seconds": {**seconds, "total": round(time.perf_counter() - started, 2)},
            "teacher": {"parameters": _parameters(root / "teacher"), "accuracy": accuracy["teacher"]},
            "student": {"parameters": _parameters(root / "student"), "accuracy": accuracy["student"]},
            "routers": routers,
        }
        text = json.dumps(report, indent=2, sort_keys=True) + "\n"
        _write_atomic(report_path, text.encode())
    return _models(root, spec, json.loads(text))  # as a later call reads it (lists, not tuples)

