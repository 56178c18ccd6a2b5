"""Knowledge distillation: a smaller student learns from a teacher's temperature-softened logits and the data.

    from export.distill import DistillConfig, StudentSpec, distill
    result = distill(DistillConfig(teacher="teacher/", data="corpus.txt", out="student/",
                                   student=StudentSpec(keep_layers=(0, 2)), steps=200))
    result.teacher_perplexity, result.student_initial_perplexity, result.student_perplexity

Modules: ``config`` (DistillConfig, StudentSpec), ``data`` (reading, packing, the held-out split, batch
order), ``student`` (layer subset or smaller config), ``loss`` (KL * T^2 + CE), ``trainer`` (the loop),
``checkpoints`` (atomic, exactly resumable), ``run`` (the whole pipeline), ``cli`` (`tandem export distill`).
torch and transformers are imported inside functions only.
"""

from export.distill.checkpoints import CheckpointError
from export.distill.config import DistillConfig, StudentSpec
from export.distill.data import DataError
from export.distill.run import REPORT_NAME, DistillResult, distill
from export.distill.trainer import StepStats

__all__ = [
    "REPORT_NAME",
    "CheckpointError",
    "DataError",
    "DistillConfig",
    "DistillResult",
    "StepStats",
    "StudentSpec",
    "distill",
]
