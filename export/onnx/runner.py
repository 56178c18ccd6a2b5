"""Run an exported decoder with ONNX Runtime: full-sequence logits, perplexity and greedy decoding.

The same loop the edge runtime runs: the first step feeds the prompt with zero-length past key/values,
every later step feeds one token with the previous step's ``present.*`` outputs as ``past_key_values.*``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from export.errors import ConversionError, SpecError
from export.onnx.signature import Signature
from export.quality import Perplexity, WindowNll, nll_from_logits, perplexity

if TYPE_CHECKING:
    import onnxruntime

MODEL_FILE = "model.onnx"


def _model_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() else path


class OnnxRunner:
    """An ONNX Runtime session over one exported decoder (batch of one sequence).

    ``path`` is the .onnx file or the folder holding ``model.onnx``; ``threads`` caps intra-op threads
    (None: ONNX Runtime's default, one per physical core).
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        import onnxruntime as ort

        model_file = _model_file(path)
        if not model_file.is_file():
            raise ConversionError(f"{model_file} does not exist; export the model first")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session: onnxruntime.InferenceSession = ort.InferenceSession(
                str(model_file), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise ConversionError(f"ONNX Runtime cannot load {model_file.name}: {exc}") from exc
        self.model_file = model_file
        self.signature = Signature.from_session(self.session)
        self.signature.validate()
        logits = self.signature.output("logits")
        self.vocab_size = logits.shape[-1] if logits and isinstance(logits.shape[-1], int) else None
        self._present = [Signature.present_name(spec.name) for spec in self.signature.past]

    def _step(
        self, token_ids: Sequence[int], past: dict[str, np.ndarray], past_length: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits (len, vocab) of ``token_ids`` following ``past_length`` cached tokens, and the new cache."""
        ids = np.asarray([list(token_ids)], dtype=np.int64)
        if ids.size == 0:
            raise SpecError("no token ids to run; give at least one token")
        if self.vocab_size is not None and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise SpecError(f"token ids must lie in [0, {self.vocab_size}); got {int(ids.min())}..{int(ids.max())}")
        length = ids.shape[1]
        feeds: dict[str, np.ndarray] = {"input_ids": ids, **past}
        if self.signature.input("attention_mask"):
            feeds["attention_mask"] = np.ones((1, past_length + length), dtype=np.int64)
        if self.signature.input("position_ids"):
            feeds["position_ids"] = np.arange(past_length, past_length + length, dtype=np.int64)[None, :]
        try:
            outputs = self.session.run(["logits", *self._present], feeds)
        except Exception as exc:
            raise ConversionError(f"ONNX Runtime failed to run {self.model_file.name}: {exc}") from exc
        present = {spec.name: value for spec, value in zip(self.signature.past, outputs[1:], strict=True)}
        return np.asarray(outputs[0][0], dtype=np.float32), present

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """(len, vocab) float32 logits of one sequence, evaluated from an empty cache."""
        return self._step(token_ids, self.signature.empty_past(), 0)[0]

    def window_nll(self) -> WindowNll:
        return lambda window: nll_from_logits(self.logits(window), window)

    def perplexity(self, windows: Sequence[Sequence[int]]) -> Perplexity:
        return perplexity(windows, self.window_nll())

    def greedy(
        self, prompt_ids: Sequence[int], max_new_tokens: int, eos_token_id: int | Iterable[int] | None = None
    ) -> list[int]:
        """Greedy decoding with the KV cache: the new tokens (stopping after an EOS token, if given)."""
        if max_new_tokens < 0:
            raise SpecError(f"max_new_tokens={max_new_tokens} must be >= 0")
        stop = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or ())
        new: list[int] = []
        past, past_length, feed = self.signature.empty_past(), 0, list(prompt_ids)
        while len(new) < max_new_tokens:
            logits, past = self._step(feed, past, past_length)
            past_length += len(feed)
            token = int(logits[-1].argmax())
            new.append(token)
            if token in stop:
                break
            feed = [token]
        return new


def onnx_perplexity(
    path: str | os.PathLike[str] | OnnxRunner, windows: Sequence[Sequence[int]], *, threads: int | None = None
) -> Perplexity:
    """Perplexity of an exported model (file, folder or runner) on held-out token windows
    (``export.quality.eval_windows``), scored like the source model's for ``QualityGate.check``."""
    runner = path if isinstance(path, OnnxRunner) else OnnxRunner(path, threads=threads)
    return runner.perplexity(windows)
