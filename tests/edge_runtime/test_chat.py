"""Chat formatting: ChatTemplate.render gives exactly what transformers' apply_chat_template(tokenize=False) gives
for the toy families' templates; TokenizerFacts reads special tokens and end-of-sequence ids from the tokenizer
files (and rejects invalid JSON); template errors map to InvalidRequestError (raise_exception) or ManifestError
(does not compile); prompt_text picks between a raw prompt and a rendered chat and appends the assistant prefix."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from edge_runtime.chat import ChatTemplate, TokenizerFacts, load_chat_template, prompt_text
from edge_runtime.errors import InvalidRequestError, ManifestError
from edge_runtime.types import GenerationRequest, Message

FAMILIES = ["tiny_llama", "tiny_qwen2", "tiny_mistral"]

CONVERSATIONS = {
    "multi-turn": [
        Message("system", "You are a terse assistant."),
        Message("user", "Name three colours."),
        Message("assistant", "Red, green, blue."),
        Message("user", "And in French? Grüße, 日本 🙂\n{{ not a template }} {% raw %}"),
    ],
    "single-user": [Message("user", "Hi!")],
}


@functools.cache
def _hf_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _manifest_template(folder: Path) -> str | None:
    """None when the folder has chat_template.jinja (load_chat_template reads it); else the template from
    tokenizer_config.json, as a manifest would carry it."""
    if (folder / "chat_template.jinja").is_file():
        return None
    return json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))["chat_template"]


def _template(folder: Path) -> ChatTemplate:
    template = load_chat_template(folder, _manifest_template(folder), TokenizerFacts.read(folder))
    assert template is not None
    return template


def _as_dicts(messages: list[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


@pytest.fixture(params=FAMILIES)
def toy(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(request.param)


# ---------------------------------------------------------------------------------------- parity with transformers


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
def test_render_matches_transformers(toy: Path, conversation: str, add_generation_prompt: bool) -> None:
    messages = CONVERSATIONS[conversation]
    expected = _hf_tokenizer(toy).apply_chat_template(
        _as_dicts(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert _template(toy).render(messages, add_generation_prompt=add_generation_prompt) == expected


def test_render_adds_the_generation_prompt_by_default(toy: Path) -> None:
    template = _template(toy)
    messages = CONVERSATIONS["single-user"]
    assert template.render(messages) == template.render(messages, add_generation_prompt=True)


def test_the_toy_templates_use_the_special_tokens(tiny_llama: Path, tiny_mistral: Path) -> None:
    """Sanity check that parity above is not vacuous: bos/eos really appear in the rendered text."""
    llama = _template(tiny_llama).render(CONVERSATIONS["single-user"])
    assert llama.startswith("<|begin_of_text|>")
    assert llama.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    mistral = _template(tiny_mistral).render(CONVERSATIONS["multi-turn"])
    assert mistral.startswith("<s>")
    assert "Red, green, blue.</s>" in mistral


@pytest.mark.parametrize(
    "source",
    [
        "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] | trim }}\n{% endfor %}",
        "{% for m in messages %}\n    {% if loop.first %}[first]{% endif %}\n{{ m.content }}\n{% endfor %}",
        "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}{{ m.content }}|{% endfor %}",
        "{{ messages | tojson }}",
        "{{ messages | tojson(indent=2) }}",
        "{{ bos_token }}{% if add_generation_prompt %}GEN{% endif %}{{ eos_token }}",
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
        "{{ messages[0]['content'][:5] }}{{ messages | length }}{{ messages | map(attribute='role') | join(',') }}",
        "{{ strftime_now('%Y') | length }}",
    ],
    ids=["filters", "trim-blocks", "loopcontrols", "tojson", "tojson-indent", "special", "namespace", "slices",
         "strftime"],
)
def test_template_features_render_as_transformers_does(tiny_llama: Path, source: str) -> None:
    messages = CONVERSATIONS["multi-turn"]
    expected = _hf_tokenizer(tiny_llama).apply_chat_template(
        _as_dicts(messages), tokenize=False, add_generation_prompt=True, chat_template=source
    )
    template = ChatTemplate(source, TokenizerFacts.read(tiny_llama))
    assert template.render(messages) == expected


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(
            "{{ messages | tojson(sort_keys=True) }}{{ messages[0].content | tojson(ensure_ascii=True) }}",
        ),
        pytest.param(
            "{% if tools is not none %}[TOOLS]{% endif %}{% if documents is not none %}[DOCS]{% endif %}ok",
        ),
        pytest.param(
            "{{ unk_token }}|{{ pad_token }}",
        ),
    ],
    ids=["tojson-kwargs", "tools-none", "other-special-tokens"],
)
def test_template_features_render_as_in_transformers(tiny_mistral: Path, source: str) -> None:
    messages = CONVERSATIONS["single-user"]
    expected = _hf_tokenizer(tiny_mistral).apply_chat_template(
        _as_dicts(messages), tokenize=False, add_generation_prompt=True, chat_template=source
    )
    assert ChatTemplate(source, TokenizerFacts.read(tiny_mistral)).render(messages) == expected


# ------------------------------------------------------------------------------------------------ template errors

FACTS = TokenizerFacts(bos_token="<s>", eos_token="</s>", eos_token_ids=frozenset({2}))


def test_raise_exception_in_the_template_is_an_invalid_request() -> None:
    source = (
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}{{ m.content }}{% endfor %}"
    )
    template = ChatTemplate(source, FACTS)
    assert template.render([Message("user", "hi")]) == "hi"
    with pytest.raises(InvalidRequestError, match="System role not supported"):
        template.render([Message("system", "be nice"), Message("user", "hi")])


def test_a_template_with_a_syntax_error_raises_manifest_error_on_first_render() -> None:
    template = ChatTemplate("{% for m in messages %}{{ m.content }}", FACTS)  # constructing does not compile
    with pytest.raises(ManifestError, match="chat template"):
        template.render([Message("user", "hi")])
    with pytest.raises(ManifestError):  # and keeps failing
        template.render([Message("user", "hi")])


def test_the_sandbox_refuses_unsafe_attribute_access() -> None:
    template = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}", FACTS)
    with pytest.raises(InvalidRequestError):
        template.render([Message("user", "hi")])


def test_missing_bos_renders_as_empty() -> None:
    facts = TokenizerFacts(bos_token=None, eos_token=None, eos_token_ids=frozenset())
    assert ChatTemplate("[{{ bos_token }}|{{ eos_token }}]", facts).render([Message("user", "x")]) == "[|]"


# ---------------------------------------------------------------------------------------------- load_chat_template


def test_load_chat_template_prefers_the_manifest_template(tmp_path: Path) -> None:
    (tmp_path / "chat_template.jinja").write_text("FILE", encoding="utf-8")
    template = load_chat_template(tmp_path, "MANIFEST", FACTS)
    assert template is not None and template.source == "MANIFEST"
    from_file = load_chat_template(tmp_path, None, FACTS)
    assert from_file is not None and from_file.source == "FILE"
    assert from_file.facts == FACTS


def test_load_chat_template_without_any_template_is_none(tmp_path: Path) -> None:
    assert load_chat_template(tmp_path, None, FACTS) is None


def test_the_toy_folders_hold_a_template(toy: Path) -> None:
    template = _template(toy)
    assert template.source == _hf_tokenizer(toy).chat_template


# -------------------------------------------------------------------------------------------------- TokenizerFacts


def _write(folder: Path, name: str, data: object) -> None:
    (folder / name).write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")


def test_facts_read_plain_strings(tmp_path: Path) -> None:
    _write(tmp_path, "tokenizer_config.json", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
    _write(tmp_path, "generation_config.json", {"eos_token_id": 128009})
    facts = TokenizerFacts.read(tmp_path)
    assert facts == TokenizerFacts(
        "<|begin_of_text|>", "<|eot_id|>", frozenset({128009}),
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    )


def test_facts_read_the_added_token_dict_form(tmp_path: Path) -> None:
    added = {"content": "<s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    _write(tmp_path, "tokenizer_config.json", {"bos_token": added, "eos_token": {**added, "content": "</s>"}})
    facts = TokenizerFacts.read(tmp_path)
    assert (facts.bos_token, facts.eos_token) == ("<s>", "</s>")


def test_facts_read_special_tokens_map(tmp_path: Path) -> None:
    _write(tmp_path, "special_tokens_map.json", {"bos_token": {"content": "<s>"}, "eos_token": "</s>"})
    facts = TokenizerFacts.read(tmp_path)
    assert (facts.bos_token, facts.eos_token) == ("<s>", "</s>")


def test_facts_eos_ids_as_a_list(tmp_path: Path) -> None:
    _write(tmp_path, "generation_config.json", {"eos_token_id": [128001, 128008, 128009]})
    assert TokenizerFacts.read(tmp_path).eos_token_ids == frozenset({128001, 128008, 128009})


def test_facts_ignore_non_integer_eos_ids(tmp_path: Path) -> None:
    _write(tmp_path, "generation_config.json", {"eos_token_id": [2, "x", None, 7.5]})
    assert TokenizerFacts.read(tmp_path).eos_token_ids == frozenset({2})


def test_facts_with_no_files(tmp_path: Path) -> None:
    assert TokenizerFacts.read(tmp_path) == TokenizerFacts(None, None, frozenset())


def test_facts_with_null_or_odd_values(tmp_path: Path) -> None:
    _write(tmp_path, "tokenizer_config.json", {"bos_token": None, "eos_token": {"no_content": 1}})
    _write(tmp_path, "generation_config.json", {"eos_token_id": None})
    assert TokenizerFacts.read(tmp_path) == TokenizerFacts(None, None, frozenset())


def test_facts_with_a_json_file_that_is_not_an_object(tmp_path: Path) -> None:
    _write(tmp_path, "tokenizer_config.json", ["not", "an", "object"])
    _write(tmp_path, "generation_config.json", 2)
    assert TokenizerFacts.read(tmp_path) == TokenizerFacts(None, None, frozenset())


@pytest.mark.parametrize("name", ["tokenizer_config.json", "special_tokens_map.json", "generation_config.json"])
@pytest.mark.parametrize("content", ["{not json", "", b"\xff\xfe{}"])
def test_facts_invalid_json_raises_manifest_error(tmp_path: Path, name: str, content: str | bytes) -> None:
    if isinstance(content, bytes):
        (tmp_path / name).write_bytes(content)
    else:
        (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(ManifestError, match=name):
        TokenizerFacts.read(tmp_path)


def test_facts_of_the_toy_folders_agree_with_transformers(toy: Path) -> None:
    facts = TokenizerFacts.read(toy)
    tokenizer = _hf_tokenizer(toy)
    assert facts.bos_token == tokenizer.bos_token
    assert facts.eos_token == tokenizer.eos_token
    assert tokenizer.convert_tokens_to_ids(tokenizer.eos_token) in facts.eos_token_ids


# ----------------------------------------------------------------------------------------------------- prompt_text


def test_prompt_text_of_a_raw_prompt(tiny_llama: Path) -> None:
    request = GenerationRequest(prompt="Once upon a time", assistant_prefix=" there")
    assert prompt_text(request, _template(tiny_llama)) == ("Once upon a time there", True)
    assert prompt_text(request, None) == ("Once upon a time there", True)


def test_prompt_text_of_messages(toy: Path) -> None:
    template = _template(toy)
    messages = CONVERSATIONS["multi-turn"]
    request = GenerationRequest(messages=messages, assistant_prefix="Rouge,")
    text, add_special = prompt_text(request, template)
    assert add_special is False
    expected = _hf_tokenizer(toy).apply_chat_template(_as_dicts(messages), tokenize=False, add_generation_prompt=True)
    assert text == expected + "Rouge,"


def test_prompt_text_without_a_prefix(tiny_qwen2: Path) -> None:
    request = GenerationRequest(messages=CONVERSATIONS["single-user"])
    assert prompt_text(request, _template(tiny_qwen2)) == (
        "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
        False,
    )


def test_prompt_text_of_messages_without_a_template_is_an_invalid_request() -> None:
    request = GenerationRequest(messages=CONVERSATIONS["single-user"])
    with pytest.raises(InvalidRequestError, match="chat template"):
        prompt_text(request, None)


def test_prompt_text_passes_template_rejections_on() -> None:
    template = ChatTemplate("{{ raise_exception('only one message, please') }}", FACTS)
    with pytest.raises(InvalidRequestError, match="only one message"):
        prompt_text(GenerationRequest(messages=CONVERSATIONS["single-user"]), template)
