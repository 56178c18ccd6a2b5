"""The smoke pipeline end to end: suite -> teacher -> distilled student -> signed bundles that the edge
runtime runs -> accuracy report -> calibrated routers; then the cache is reused, not rebuilt."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge_runtime.bundle import load_public_key, verify_bundle
from edge_runtime.router import ROUTER_FILE, load_router
from export.tasks import LEVELS, generate_split
from export.tasks.build import REPORT_FILE, TaskBuildProgress, TaskModelsSpec, ensure_task_models
from tests.support import invoke


def test_teacher_and_student_are_model_folders_with_the_task_tokenizer(smoke_models) -> None:
    from export.source import SourceModel

    teacher, student = SourceModel.open(smoke_models.teacher), SourceModel.open(smoke_models.student)
    assert teacher.arch == student.arch == "llama"
    assert student.parameter_count() < teacher.parameter_count()
    assert (student.path / "tokenizer.json").read_bytes() == (teacher.path / "tokenizer.json").read_bytes()
    tokenizer = student.load_tokenizer()
    for item in generate_split("test", 4, families=["sort", "addition"], levels=[5]):
        prompt = tokenizer.apply_chat_template(item.chat(), tokenize=True, add_generation_prompt=True)
        # One token per character, plus BOS, a role and an end token per message, and the assistant's role.
        characters = sum(len(turn.content) for turn in item.messages)
        assert len(prompt) == characters + 2 * len(item.messages) + 2
    report = json.loads((student.path / "distill_report.json").read_text())
    assert report["config"]["text_mode"] == "chat"


def test_bundles_verify_and_answer_through_the_edge_runtime(smoke_models) -> None:
    from edge_runtime import GenerationRequest, Message, SamplingParams, SyncEngine, load_bundle

    keys = [load_public_key(smoke_models.public_key)]
    item = generate_split("test", 1, families=["addition"], levels=[1])[0]
    request = GenerationRequest(messages=[Message(t.role, t.content) for t in item.messages],
                                sampling=SamplingParams(temperature=0.0, max_tokens=6))
    texts = {}
    for fmt, bundle in smoke_models.bundles.items():
        manifest = verify_bundle(bundle, keys)
        assert manifest.format == fmt and ROUTER_FILE in manifest.files
        with SyncEngine(load_bundle(bundle, trusted_keys=keys)) as engine:
            completion = engine.complete(request)
        assert completion.usage.completion_tokens >= 1 and len(completion.logprobs) >= 1
        texts[fmt] = completion.text
        assert load_router(bundle, trusted_keys=keys).metrics["items"] == len(
            generate_split("calibration", TaskModelsSpec.smoke().calibration_per_cell))
    assert texts["gguf"] == texts["onnx"]  # the same student, greedy, in two runtimes


def test_the_report_has_accuracy_per_level_for_both_models(smoke_models) -> None:
    report = smoke_models.report
    assert report == json.loads((smoke_models.path / REPORT_FILE).read_text())
    items = len(generate_split("test", TaskModelsSpec.smoke().test_per_cell))
    for table in (report["teacher"]["accuracy"], *report["student"]["accuracy"].values()):
        assert table["items"] == items
        assert set(table["levels"]) == {str(level) for level in LEVELS}
        assert all(0.0 <= value <= 1.0 for value in table["levels"].values())
    assert set(report["student"]["accuracy"]) == {"gguf", "onnx"}
    assert report["seconds"]["total"] > 0 and set(report["routers"]) == {"gguf", "onnx"}


def test_a_second_call_reuses_the_cache(smoke_models, task_cache: Path) -> None:
    stages: list[str] = []

    class Recorder(TaskBuildProgress):
        def stage(self, name: str) -> None:
            stages.append(name)

    before = (smoke_models.student / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    again = ensure_task_models(task_cache / "tasks", size="smoke", progress=Recorder())
    assert time.perf_counter() - started < 5 and stages == []
    assert again.report == smoke_models.report and again.bundles == smoke_models.bundles
    assert (again.student / "model.safetensors").stat().st_mtime_ns == before


def test_another_recipe_builds_elsewhere() -> None:
    smoke, full = TaskModelsSpec.smoke(), TaskModelsSpec.full()
    assert smoke.folder_name != full.folder_name and smoke.folder_name.startswith("smoke-")
    assert smoke.digest() == TaskModelsSpec.smoke().digest()
    with pytest.raises(ValueError, match="size='huge'"):
        TaskModelsSpec.for_size("huge")


def test_the_cli_prints_accuracy_per_difficulty(smoke_models, task_cache: Path) -> None:
    result = invoke("export", "tasks", "build", "--smoke", "--cache-dir", str(task_cache / "tasks"))
    assert result.exit_code == 0, result.output
    assert "accuracy on the test split" in result.output and "difficulty" in result.output
    for column in ("teacher", "student gguf", "student onnx", "overall", "router AUROC"):
        assert column in result.output
