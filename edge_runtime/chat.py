"""Chat formatting with the bundle's own template, rendered the way Hugging Face transformers renders it
(sandboxed Jinja2, ``trim_blocks`` and ``lstrip_blocks``, ``raise_exception`` and ``strftime_now``), so a
bundle formats a conversation exactly as its source model did; and the tokenizer facts the template and the
stop logic need (special token strings, end-of-sequence ids), read from the bundle's tokenizer files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from edge_runtime.errors import InvalidRequestError, ManifestError
from edge_runtime.types import GenerationRequest, Message


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path.name} in the bundle is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class TokenizerFacts:
    """What the bundle's tokenizer files say about special tokens."""

    bos_token: str | None
    eos_token: str | None
    eos_token_ids: frozenset[int]
    """From generation_config.json; backends add the tokenizer's own end-of-sequence ids."""
    special_tokens: dict[str, Any] = field(default_factory=dict)
    """Every special token by name (unk_token, pad_token, additional_special_tokens...), for templates."""

    @classmethod
    def read(cls, folder: Path) -> TokenizerFacts:
        config = _read_json(folder / "tokenizer_config.json") | _read_json(folder / "special_tokens_map.json")
        eos = _read_json(folder / "generation_config.json").get("eos_token_id")
        ids = [eos] if isinstance(eos, int) else eos if isinstance(eos, list) else []
        special: dict[str, Any] = {}
        for name, value in config.items():
            if name.endswith("_token") and _token_text(value) is not None:
                special[name] = _token_text(value)
        extra = config.get("additional_special_tokens")
        if isinstance(extra, list):
            special["additional_special_tokens"] = [t for t in map(_token_text, extra) if t is not None]
        return cls(
            bos_token=_token_text(config.get("bos_token")),
            eos_token=_token_text(config.get("eos_token")),
            eos_token_ids=frozenset(i for i in ids if isinstance(i, int)),
            special_tokens=special,
        )


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    """transformers' ``tojson`` filter (not Jinja's, which escapes HTML)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class ChatTemplate:
    """A compiled chat template; ``render`` is what ``apply_chat_template(..., tokenize=False)`` returns."""

    def __init__(self, source: str, facts: TokenizerFacts) -> None:
        self.source = source
        self.facts = facts

    @cached_property
    def _template(self) -> Any:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise jinja2.exceptions.TemplateError(message)

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        env.filters["tojson"] = _tojson
        try:
            return env.from_string(self.source)
        except jinja2.exceptions.TemplateError as exc:
            raise ManifestError(f"the bundle's chat template does not compile: {exc}") from exc

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        import jinja2

        try:
            return self._template.render(
                self.facts.special_tokens
                | {
                    "messages": [{"role": m.role, "content": m.content} for m in messages],
                    "add_generation_prompt": add_generation_prompt,
                    "bos_token": self.facts.bos_token or "",
                    "eos_token": self.facts.eos_token or "",
                    "tools": None,
                    "documents": None,
                }
            )
        except (jinja2.exceptions.TemplateError, TypeError, ValueError) as exc:
            raise InvalidRequestError(f"chat.messages: the model's chat template rejected them: {exc}") from exc


def prompt_text(request: GenerationRequest, template: ChatTemplate | None) -> tuple[str, bool]:
    """(the text to tokenize, whether the tokenizer should add its special tokens).

    A chat is rendered by the template, which writes the special tokens itself; a raw prompt gets the
    tokenizer's own (the BOS token of Llama-style models). The assistant prefix follows either.
    """
    if request.messages is None:
        assert request.prompt is not None
        return request.prompt + request.assistant_prefix, True
    if template is None:
        raise InvalidRequestError("chat.messages: this bundle has no chat template; send a raw prompt instead")
    return template.render(request.messages) + request.assistant_prefix, False


def load_chat_template(folder: Path, manifest_template: str | None, facts: TokenizerFacts) -> ChatTemplate | None:
    """The template given (a bundle manifest's), else chat_template.jinja, else tokenizer_config.json's."""
    source = manifest_template
    if source is None and (folder / "chat_template.jinja").is_file():
        source = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if source is None:
        configured = _read_json(folder / "tokenizer_config.json").get("chat_template")
        source = configured if isinstance(configured, str) else None
    return ChatTemplate(source, facts) if source else None
