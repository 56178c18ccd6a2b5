"""`tandem edge generate`: one answer from a verified bundle, or a one-line error and exit status 2."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.support import invoke


@pytest.fixture(scope="module")
def public_key(tmp_path_factory, signing_key):
    path = tmp_path_factory.mktemp("keys") / "team.pub"
    path.write_bytes(signing_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.mark.parametrize(("fmt", "quantization"), [("gguf", "f32"), ("onnx", "fp32")])
def test_generate_prints_the_answer_with_tokens_logprobs_and_timings(bundles, public_key, fmt, quantization):
    bundle = bundles("llama", fmt, quantization)
    result = invoke("edge", "generate", str(bundle), "-k", str(public_key), "-m", "Hello", "--max-tokens", "6",
                    "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["completion_tokens"] == len(answer["token_ids"]) == len(answer["logprobs"]) <= 6
    assert answer["backend"] == ("llama.cpp" if fmt == "gguf" else "onnxruntime")
    assert answer["ttft_ms"] > 0 and answer["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", "hi", "--top-p", "0"], "sampling.top_p must lie in (0, 1]"),
        (["--prompt", "hi", "-m", "hi"], "not both"),
        (["-m", "hi", "--context-length", "100000"], "exceeds"),
    ],
)
def test_bad_options_give_a_one_line_error(bundles, public_key, args, message):
    result = invoke("edge", "generate", str(bundles("llama", "gguf", "f32")), "-k", str(public_key), *args)
    assert result.exit_code == 2
    assert message in result.output


def test_a_missing_bundle_is_a_clear_error(tmp_path, public_key):
    result = invoke("edge", "generate", str(tmp_path / "nowhere"), "-k", str(public_key), "-m", "hi")
    assert result.exit_code == 2
    assert "no bundle at" in result.output
