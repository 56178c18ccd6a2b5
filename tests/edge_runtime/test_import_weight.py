from tests.support import heavy_modules_after


def test_import_edge_runtime_loads_no_ml_framework() -> None:
    assert heavy_modules_after("import edge_runtime") == []


def test_running_both_backends_loads_neither_torch_nor_transformers(bundles, trusted, signing_key) -> None:
    """What a device does (verify, load, generate on llama.cpp and ONNX Runtime) needs only the edge extra."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pem = signing_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    paths = [str(bundles("llama", "gguf", "q8_0")), str(bundles("llama", "onnx", "int8"))]
    statement = (
        "from edge_runtime import GenerationRequest, SyncEngine, load_bundle\n"
        "from edge_runtime.bundle import load_public_key\n"
        f"key = load_public_key({pem!r})\n"
        f"for path in {paths!r}:\n"
        "    with SyncEngine(load_bundle(path, trusted_keys=[key])) as engine:\n"
        "        assert engine.complete(GenerationRequest(prompt='Hello')).usage.completion_tokens\n"
    )
    assert set(heavy_modules_after(statement)) <= {"tokenizers"}
