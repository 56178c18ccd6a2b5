"""`tandem eval routing`: routing quality on the synthetic task suite, through the real SDK on real engines.

    from evaluation.routing import EvalSettings, evaluate_routing
    report = evaluate_routing(EvalSettings(size="full"))      # the JSON object of `tandem eval routing --json`

Modules: ``settings`` (the options, validated), ``policies`` (the policies compared, declared once),
``run`` (their real runs: a cloud tier the caller starts, signed device bundle, AsyncHybridClient),
``replay`` (threshold sweeps replayed from recorded outcomes; numpy only), ``report`` (the JSON object and the
tables), ``plot`` (the PNG), ``evaluate`` (all of it in one call), ``cli`` (the command), ``errors``.
"""

from evaluation.routing.errors import (
    EvaluationError,
    EvaluationRunError,
    EvaluationSettingsError,
    RouterMissingError,
)
from evaluation.routing.evaluate import evaluate_routing
from evaluation.routing.settings import EvalSettings

__all__ = [
    "EvalSettings",
    "EvaluationError",
    "EvaluationRunError",
    "EvaluationSettingsError",
    "RouterMissingError",
    "evaluate_routing",
]
