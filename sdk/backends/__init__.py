"""The two sides a request can run on: the device (``edge.EdgeSide``) and the cloud (``cloud.CloudSide``).

Each side's ``generate`` returns a ``SideStream`` of ``edge_runtime.TokenEvent`` that carries the model,
version and vocabulary serving it, and raises ``SideFailure`` when it cannot (or can no longer) answer; the
orchestrator turns failures into retries, fallbacks and failovers.
"""

from sdk.backends.failure import LinkFailure, SideFailure
from sdk.backends.stream import SideStream

__all__ = ["LinkFailure", "SideFailure", "SideStream"]
