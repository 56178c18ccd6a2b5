"""The small task models: a difficulty signal real enough for routing tests. The teacher solves the easy items,
the student is close to it there and clearly worse on the hard ones, the bundles' routers tell the two apart on
held-out prompts, and routing by a router beats routing at random on the test split.

The bounds leave room below what the spec measured with torch's AVX-512 and its AVX2 kernels
(``ATEN_CPU_CAPABILITY=avx2``, what CPUs without AVX-512 run), which train to different models from the same
seed: the build is deterministic on one machine under any load (export.tasks.training_process), not across CPU
models, so the bounds must hold for both (see ``TaskModelsSpec.small``); earlier specs also measured seeds 0-4."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from edge_runtime.bundle import load_public_key
from edge_runtime.router import load_router, text_features
from export.calibrate.fit import auroc
from export.errors import SpecError
from export.tasks.answers import ANSWER_MAX_TOKENS, bundle_answers, model_answers
from export.tasks.build import DIGEST_OPTIONAL, RECIPE_VERSION, TaskModelsSpec
from tests.support import invoke

EASY, HARD = "1", "3"
TEACHER_EASY_MIN = 0.8
"""Teacher accuracy on level 1; measured 0.975-1.0."""
STUDENT_EASY_GAP_MAX = 0.15
"""How far the student may trail the teacher on level 1; measured 0.025 (AVX-512) and 0.1375 (AVX2)."""
STUDENT_DROP_MIN = 0.08
"""Student accuracy on level 1 minus level 3; measured 0.275-0.41."""
HARD_GAP_MIN = 0.15
"""Teacher minus student accuracy on level 3; measured 0.2 (AVX2) and 0.41 (AVX-512); 20 student steps gave
0.075 on AVX2, the failure this spec was changed for."""
HELD_OUT_AUROC_MIN = 0.65
"""The routers' AUROC on the calibration prompts held out of their fit; measured 0.74-0.91."""
TEST_AUROC_MIN = 0.65
"""The router's AUROC for the device answers on the test split; measured 0.79-0.93."""
CLOUD_SHARE = 0.35
"""Share of requests the router is asked to send to the cloud (its calibrated threshold)."""
CLOUD_SHARE_RANGE = (0.1, 0.6)
"""Share the calibrated threshold actually sends on the test split; measured 0.19-0.35."""
ROUTER_OVER_RANDOM_MIN = 0.03
"""Accuracy of routing by the router minus that of sending the same share at random; measured 0.06-0.09."""


def _levels(table: dict) -> dict[str, float]:
    return table["levels"]


def test_the_new_spec_fields_leave_the_digests_of_earlier_specs_alone() -> None:
    for spec in (TaskModelsSpec.full(), TaskModelsSpec.smoke()):
        legacy = {name: value for name, value in dataclasses.asdict(spec).items() if name not in DIGEST_OPTIONAL}
        payload = json.dumps({"recipe": RECIPE_VERSION, **legacy}, sort_keys=True).encode()
        assert spec.digest() == hashlib.sha256(payload).hexdigest()
        assert spec.to_dict() == legacy
    full = TaskModelsSpec.full()
    assert dataclasses.replace(full, families=("sort",)).digest() != full.digest()
    assert dataclasses.replace(full, levels=(1, 2)).digest() != full.digest()
    small = TaskModelsSpec.for_size("small")
    assert small == TaskModelsSpec.small() and small.folder_name.startswith("small-")
    assert small.to_dict()["families"] == ("reverse", "sort") and small.to_dict()["levels"] == (1, 2, 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"families": ("counting",)}, "families=.*must name distinct families"),
        ({"families": ()}, "families="),
        ({"families": ("sort", "sort")}, "families="),
        ({"levels": (3, 1)}, "levels=.*increasing order"),
        ({"levels": (0, 1)}, "levels="),
    ],
)
def test_families_and_levels_are_checked_where_the_spec_is_built(change: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        dataclasses.replace(TaskModelsSpec.small(), **change)


def test_the_split_covers_only_the_specs_families_and_levels() -> None:
    spec = TaskModelsSpec.small()
    items = spec.split("test", 2)
    assert {(item.family, item.level) for item in items} == {(f, lv) for f in ("reverse", "sort") for lv in (1, 2, 3)}
    assert len(TaskModelsSpec.full().split("test", 1)) == 15


@pytest.mark.slow
def test_the_teacher_solves_easy_items_and_the_student_falls_behind_on_hard_ones(small_models) -> None:
    report = small_models.report
    assert report["spec"]["families"] == ["reverse", "sort"] and report["spec"]["levels"] == [1, 2, 3]
    teacher = _levels(report["teacher"]["accuracy"])
    assert set(teacher) == {"1", "2", "3"} and set(report["teacher"]["accuracy"]["families"]) == {"reverse", "sort"}
    assert teacher[EASY] >= TEACHER_EASY_MIN, teacher
    for fmt, table in report["student"]["accuracy"].items():
        student = _levels(table)
        assert student[EASY] >= teacher[EASY] - STUDENT_EASY_GAP_MAX, (fmt, student, teacher)
        assert student[EASY] - student[HARD] >= STUDENT_DROP_MIN, (fmt, student)
        assert teacher[HARD] - student[HARD] >= HARD_GAP_MIN, (fmt, student, teacher)
    assert report["student"]["parameters"] < report["teacher"]["parameters"]


@pytest.mark.slow
def test_the_routers_separate_good_from_bad_device_answers_on_held_out_prompts(small_models) -> None:
    spec = TaskModelsSpec.small()
    keys = [load_public_key(small_models.public_key)]
    for fmt, bundle in small_models.bundles.items():
        metrics = load_router(bundle, trusted_keys=keys).metrics
        assert metrics == small_models.report["routers"][fmt]
        assert metrics["items"] == len(spec.split("calibration", spec.calibration_per_cell))
        assert 0.0 < metrics["device_good_share"] < 1.0  # both labels occur
        assert metrics["auroc"] >= HELD_OUT_AUROC_MIN, (fmt, metrics)


@pytest.mark.slow
def test_routing_by_the_router_beats_random_routing_on_the_test_split(small_models) -> None:
    spec = TaskModelsSpec.small()
    items = spec.split("test", spec.test_per_cell)
    keys = [load_public_key(small_models.public_key)]
    cloud = np.array([item.check(answer) for item, answer in zip(items, model_answers(small_models.teacher, items),
                                                                 strict=True)])
    features = np.stack([text_features(item.messages, ANSWER_MAX_TOKENS) for item in items])
    for fmt, bundle in small_models.bundles.items():
        device = np.array([item.check(answer) for item, answer in zip(items, bundle_answers(bundle, keys, items),
                                                                      strict=True)])
        # The same greedy answers the build measured.
        assert device.mean() == pytest.approx(small_models.report["student"]["accuracy"][fmt]["overall"])
        router = load_router(bundle, trusted_keys=keys)
        p_good = router.predict(features)
        assert auroc(p_good, device) >= TEST_AUROC_MIN, fmt
        to_cloud = p_good < router.threshold_for_cloud_share(CLOUD_SHARE)
        share = float(to_cloud.mean())
        assert CLOUD_SHARE_RANGE[0] <= share <= CLOUD_SHARE_RANGE[1], (fmt, share)
        routed = float(np.where(to_cloud, cloud, device).mean())
        at_random = float(device.mean() + share * (cloud.mean() - device.mean()))  # expected, same share
        assert device.mean() < at_random < routed, (fmt, device.mean(), at_random, routed, cloud.mean())
        assert routed - at_random >= ROUTER_OVER_RANDOM_MIN, (fmt, routed, at_random)


@pytest.mark.slow
def test_the_cli_builds_by_size(small_models, task_cache) -> None:
    result = invoke("export", "tasks", "build", "--size", "small", "--cache-dir", str(task_cache / "tasks"))
    assert result.exit_code == 0, result.output
    assert "task models (small)" in result.output and "router AUROC" in result.output
    assert "reverse" in result.output and "addition" not in result.output
    cache = str(task_cache / "tasks")
    conflicting = invoke("export", "tasks", "build", "--smoke", "--size", "small", "--cache-dir", cache)
    assert conflicting.exit_code == 2 and "--smoke and --size small disagree" in conflicting.output
    unknown = invoke("export", "tasks", "build", "--size", "huge", "--cache-dir", str(task_cache / "tasks"))
    assert unknown.exit_code == 2 and "full, small, smoke" in unknown.output
