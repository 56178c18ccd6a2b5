"""KvBatch with prebuilt attention masks computes what transformers computes from the 2D padding mask, for
padded rows prefilled apart, decoded together and leaving the batch."""

from __future__ import annotations

import pytest


def _run(model, prebuilt: bool) -> list:
    import torch
    from transformers import DynamicCache

    from cloud_service.engines.kv_batch import KvBatch, prefill_inputs, prefill_mask, select_rows

    batch = KvBatch(prebuilt_mask=prebuilt)
    logits = []
    with torch.inference_mode():
        # prompts of different lengths, in two groups as requests arriving apart are: every row is padded
        for group in ([[5, 6, 7], [8, 9, 10, 11, 12, 13]], [[14], [15, 16, 17, 18]]):
            inputs = prefill_inputs(group)
            padding = inputs["attention_mask"]
            if prebuilt:
                inputs["attention_mask"] = prefill_mask(padding)
            cache = DynamicCache()
            logits.append(model(**inputs, past_key_values=cache, use_cache=True).logits[:, -1])
            batch.add(select_rows(cache, list(range(len(group)))), padding)
        for step in range(4):
            if step == 2:
                batch.keep([0, 2, 3])  # a finished row leaves
            logits.append(model(**batch.step_inputs([20 + step] * batch.size)).logits[:, -1])
    return logits


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_prebuilt_masks_give_the_logits_of_transformers_masks(family, tiny_llama, tiny_qwen2):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained({"llama": tiny_llama, "qwen2": tiny_qwen2}[family]).eval()
    prebuilt, built_by_transformers = _run(model, True), _run(model, False)
    assert len(prebuilt) == 6
    for ours, theirs in zip(prebuilt, built_by_transformers, strict=True):
        assert not torch.isnan(ours).any()
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_only_full_attention_over_the_context_gets_a_prebuilt_mask():
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    from cloud_service.engines.kv_batch import prebuilt_mask_fits

    assert prebuilt_mask_fits(LlamaConfig(), 2048)
    assert prebuilt_mask_fits(Qwen2Config(num_hidden_layers=2), 2048)
    assert prebuilt_mask_fits(MistralConfig(sliding_window=4096), 4096)
    assert not prebuilt_mask_fits(MistralConfig(sliding_window=512), 4096)
    windowed = Qwen2Config(use_sliding_window=True, sliding_window=512, max_window_layers=1, num_hidden_layers=2)
    assert not prebuilt_mask_fits(windowed, 4096)
