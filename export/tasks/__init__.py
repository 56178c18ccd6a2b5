"""The synthetic task suite (graded difficulty, exact answers) and its teacher / student models.

    from export.tasks import generate_split
    test = generate_split("test", per_cell=30)               # pure Python: importable without torch
    from export.tasks.build import ensure_task_models        # teacher, student, signed bundles (torch)
    models = ensure_task_models(size="smoke")

Modules: ``families`` (the task families and their levels), ``suite`` (items, splits), ``tokenizer`` (the
task models' byte-level tokenizer and compact chat template), ``models`` (shapes, the untrained teacher),
``answers`` (greedy answers through the edge runtime or transformers; accuracy tables), ``build``
(``ensure_task_models``, the cached pipeline), ``cli`` (`tandem export tasks build`). Only ``families`` and
``suite`` are imported here: the SDK's evaluation uses them on devices without torch.
"""

from export.tasks.families import FAMILIES, LEVELS, Problem, TaskFamily
from export.tasks.suite import SPLITS, ChatTurn, TaskItem, generate_split, split_of, training_stream

__all__ = [
    "FAMILIES",
    "LEVELS",
    "SPLITS",
    "ChatTurn",
    "Problem",
    "TaskFamily",
    "TaskItem",
    "generate_split",
    "split_of",
    "training_stream",
]
