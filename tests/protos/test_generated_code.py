"""The committed wire code in cloud_service/wire/ is what protos/generate.py writes today."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO


def _load_generator():
    spec = importlib.util.spec_from_file_location("protos_generate", REPO / "protos" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_wire_code_is_fresh() -> None:
    done = subprocess.run(
        [sys.executable, "protos/generate.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_check_names_edited_missing_and_extra_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generator = _load_generator()
    copy = tmp_path / "wire"
    shutil.copytree(generator.OUT_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(generator, "OUT_ROOT", copy)
    assert generator.check() == []

    edited = copy / "v1" / "inference_pb2.py"
    edited.write_text(edited.read_text() + "\n# hand edit\n")
    (copy / "v1" / "distribution_pb2.pyi").unlink()
    (copy / "v1" / "leftover_pb2.py").write_text("")
    assert generator.check() == ["v1/distribution_pb2.pyi", "v1/leftover_pb2.py", "v1/inference_pb2.py"]


def test_generated_code_imports_relatively_and_defines_the_services() -> None:
    from cloud_service.wire.v1 import distribution_pb2_grpc, inference_pb2, inference_pb2_grpc

    assert inference_pb2.DESCRIPTOR.package == "tandem.v1"
    assert hasattr(inference_pb2_grpc, "InferenceStub")
    assert hasattr(distribution_pb2_grpc, "ModelDistributionServicer")
    request = inference_pb2.GenerateRequest(request_id="r1", prompt="hi", assistant_prefix="Hel")
    assert inference_pb2.GenerateRequest.FromString(request.SerializeToString()) == request
    assert request.WhichOneof("input") == "prompt"
