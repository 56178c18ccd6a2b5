"""`tandem export keygen | gguf | verify | inspect` from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import invoke


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    prefix = tmp_path_factory.mktemp("keys") / "team"
    result = invoke("export", "keygen", str(prefix))
    assert result.exit_code == 0, result.output
    return prefix.with_suffix(".key"), prefix.with_suffix(".pub")


@pytest.fixture(scope="module")
def bundle(keys, tiny_qwen2: Path, eval_text: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    (folder / "eval.txt").write_text(eval_text)
    out = folder / "bundle"
    result = invoke("export", "gguf", str(tiny_qwen2), str(out), "-q", "q8_0", "--signing-key", str(keys[0]),
                    "--eval-data", str(folder / "eval.txt"))
    assert result.exit_code == 0, result.output
    assert "perplexity (source -> bundle)" in result.output
    return out


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(keys) -> None:
    private, public = keys
    assert private.stat().st_mode & 0o777 == 0o600
    assert b"PUBLIC KEY" in public.read_bytes()
    result = invoke("export", "keygen", str(private.with_suffix("")))
    assert result.exit_code == 2 and "already exists" in result.output


def test_verify_accepts_the_bundle_and_inspect_shows_it(bundle: Path, keys) -> None:
    result = invoke("export", "verify", str(bundle), "--public-key", str(keys[1]))
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "q8_0" in result.output
    shown = invoke("export", "inspect", str(bundle), "--public-key", str(keys[1]))
    assert shown.exit_code == 0, shown.output
    for text in ("verified", "qwen2", "Q8_0", "quality_gate", "model.gguf"):
        assert text in shown.output


def test_verify_fails_with_exit_1_after_tampering(bundle: Path, keys, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(bundle, tmp_path / "copy"))
    path = copy / "tokenizer.json"
    path.write_text(path.read_text().replace("<|im_end|>", "<|im_xnd|>", 1))
    result = invoke("export", "verify", str(copy), "--public-key", str(keys[1]))
    assert result.exit_code == 1
    assert "tokenizer.json" in result.output and "altered" in result.output


def test_signing_key_from_the_environment_as_pem_text(keys, tiny_llama: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tandem.cli import app

    env = {"TANDEM_SIGNING_KEY": keys[0].read_text(), "COLUMNS": "200"}
    result = CliRunner(env=env).invoke(app, ["export", "gguf", str(tiny_llama), str(tmp_path / "b"), "-q", "f16"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b" / "manifest.sig").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--signing-key", "/nonexistent.key"], "cannot read the signing key"),
        (["-q", "q4_0"], "needs held-out evaluation text"),
        (["-q", "int3"], "'int3' is not one of"),
    ],
)
def test_bad_options_exit_2_with_a_message_and_write_nothing(
    args: list[str], message: str, keys, tiny_llama: Path, tmp_path: Path
) -> None:
    if "--signing-key" not in args:
        args = [*args, "--signing-key", str(keys[0])]
    result = invoke("export", "gguf", str(tiny_llama), str(tmp_path / "out"), *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_location_is_a_clear_error(keys, tiny_llama: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke("export", "gguf", str(tiny_llama), str(blocker / "out"), "-q", "f16", "--signing-key", str(keys[0]))
    assert result.exit_code == 1, result.output  # a machine fault, not a wrong option
    assert f"{blocker} is a file, not a folder" in " ".join(result.output.split())
