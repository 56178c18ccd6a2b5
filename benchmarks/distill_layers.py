"""Which teacher layers a `tandem export distill --keep-layers` student should keep, on the real pretrained model
(SmolLM2-135M-Instruct, export.pretrained), before any training.

For every contiguous block of ``--drop`` layers that leaves the last layer in place, it prints the held-out
perplexity of the student made by dropping that block (weights copied, no training), and the block's mean
angular distance: arccos(cosine) / pi between the hidden state entering the block and the one leaving it, over
every token of a few training windows (Gromov et al., "The Unreasonable Ineffectiveness of the Deeper Layers").
The smallest distance is a one-forward-pass guess at the block that matters least; the perplexity column says
whether the guess is right. An "every-k-th layer" student of the same size is scored beside them.

    .venv/bin/python -m benchmarks.distill_layers [--drop 10] [--windows 8] [--json]

The text is export.pretrained.reference_text, packed at 256 tokens; the last 10 % is held out, as in
`tandem export distill --text-mode whole`.
"""

from __future__ import annotations

import argparse
import json
import math
import time

from rich.console import Console
from rich.table import Table

from export.distill.config import StudentSpec
from export.distill.data import pack, tokenize_documents
from export.distill.student import build_student
from export.pretrained import ensure_pretrained, reference_text
from export.quality import hf_window_nll, perplexity
from export.source import SourceModel

SEQ_LEN = 256
TEXT_CHARS = 400_000


def block_distances(teacher, sequences: list[list[int]], drop: int) -> list[float]:
    """Mean angular distance of each block ``start .. start + drop - 1`` that ends before the last layer."""
    import torch

    layers = teacher.config.num_hidden_layers
    starts = range(layers - drop)  # the block must leave the last layer in place
    totals = [0.0] * len(starts)
    tokens = 0
    with torch.no_grad():
        for sequence in sequences:
            # hidden_states[i] enters layer i for i < layers (the last entry is after the final norm).
            states = teacher(torch.tensor([sequence]), output_hidden_states=True).hidden_states
            for start in starts:
                cosine = torch.nn.functional.cosine_similarity(states[start], states[start + drop], dim=-1)
                totals[start] += float((torch.arccos(cosine.clamp(-1, 1)) / math.pi).sum())
            tokens += len(sequence)
    return [total / tokens for total in totals]


def held_out_perplexity(model, windows: list[list[int]]) -> float:
    return perplexity(windows, hf_window_nll(model.eval())).value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drop", type=int, default=10, help="Layers to drop (a contiguous block).")
    parser.add_argument("--windows", type=int, default=8, help="Held-out windows scored, and training windows probed.")
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    args = parser.parse_args()

    import torch

    if args.windows < 1:
        parser.error("--windows must be at least 1")
    torch.set_num_threads(2)
    started = time.perf_counter()
    source = SourceModel.open(ensure_pretrained().path)
    layers = int(source.config["num_hidden_layers"])
    if not 1 <= args.drop < layers:
        parser.error(f"--drop must be between 1 and {layers - 1} for this {layers}-layer teacher")
    tokenizer = source.load_tokenizer()
    data = pack(tokenize_documents(tokenizer, [reference_text(TEXT_CHARS)]), SEQ_LEN, 0.1)
    windows = data.held_out_windows(args.windows)
    teacher = source.load_model(torch.float32).eval()

    distances = block_distances(teacher, data.train[: args.windows], args.drop)
    rows = []
    for start, distance in enumerate(distances):
        keep = tuple(index for index in range(layers) if not start <= index < start + args.drop)
        student = build_student(teacher, StudentSpec(keep_layers=keep), seed=0)
        rows.append({"dropped": [start, start + args.drop - 1], "angular_distance": distance,
                     "perplexity": held_out_perplexity(student, windows)})
    kept = layers - args.drop
    spread = tuple(round(i * (layers - 1) / (kept - 1)) for i in range(kept)) if kept > 1 else (layers - 1,)
    spread_ppl = held_out_perplexity(build_student(teacher, StudentSpec(keep_layers=spread), seed=0), windows)
    by_distance = min(rows, key=lambda row: row["angular_distance"])
    by_perplexity = min(rows, key=lambda row: row["perplexity"])
    result = {
        "teacher_layers": layers, "drop": args.drop, "windows": len(windows), "seq_len": SEQ_LEN,
        "teacher_perplexity": held_out_perplexity(teacher, windows),
        "blocks": rows, "chosen_by_distance": by_distance["dropped"], "best_by_perplexity": by_perplexity["dropped"],
        "spread_layers": list(spread), "spread_perplexity": spread_ppl,
        "seconds": time.perf_counter() - started,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"students of {kept} of {layers} layers, before training ({len(windows)} windows)")
    for column in ("dropped layers", "angular distance", "perplexity"):
        table.add_column(column, justify="right")
    for row in rows:
        mark = " <- smallest distance" if row is by_distance else ""
        table.add_row(f"{row['dropped'][0]}-{row['dropped'][1]}", f"{row['angular_distance']:.3f}",
                      f"{row['perplexity']:,.1f}{mark}")
    table.add_row("every k-th layer", "", f"{spread_ppl:,.1f}")
    table.add_row("none (teacher)", "", f"{result['teacher_perplexity']:,.2f}")
    Console().print(table)
    ratio = by_distance["perplexity"] / by_perplexity["perplexity"]
    print(f"smallest distance drops {by_distance['dropped']}; lowest perplexity drops {by_perplexity['dropped']} "
          f"(ratio {ratio:.2f}); {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
