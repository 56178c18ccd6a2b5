"""Errors of the routing evaluation, split by what the caller can do about them.

    EvaluationError                       base of everything `tandem eval routing` raises on purpose
    ├── EvaluationSettingsError (ValueError)  an option is invalid; the message names it and what is allowed
    ├── RouterMissingError                the device bundle carries no calibrated router: calibrate it
    └── EvaluationRunError                a request of a policy run got no answer, or the device bundle could
                                          not be loaded; the message names the policy and the item

The CLI prints the message and exits with status 2.
"""

from __future__ import annotations


class EvaluationError(Exception):
    """Base class of the routing evaluation's errors."""


class EvaluationSettingsError(EvaluationError, ValueError):
    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option = option
        self.problem = problem


class RouterMissingError(EvaluationError):
    """The bundle has no router.json: run `tandem export calibrate-router` on it (or rebuild the task models)."""


class EvaluationRunError(EvaluationError):
    """A request of a policy run failed on both sides, or the device could not be loaded."""
