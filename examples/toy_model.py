"""Build a toy model with the factory and chat with it through plain transformers.

    python examples/toy_model.py [FOLDER] [--arch llama|qwen2]

The toy models are what Tandem's tests, benchmarks and demo run on where no model hub can be reached:
real architectures with random weights, so the answer is noise but every step is the real one.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from export.safetensors_info import parameter_count
from export.toy_models import FAMILIES, ToyModelSpec, cached_toy_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache", nargs="?", type=Path, help="where to keep the model (default: a temp folder)")
    parser.add_argument("--arch", choices=sorted(FAMILIES), default="qwen2")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        folder = cached_toy_model(ToyModelSpec.tiny(options.arch), options.cache or Path(scratch))
        print(f"{folder.name}: {parameter_count(folder):,} parameters")

        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        messages = [{"role": "user", "content": "Say hello."}]
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        print("prompt:", repr(tokenizer.decode(inputs["input_ids"][0])))
        print("answer:", repr(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:])))


if __name__ == "__main__":
    main()
