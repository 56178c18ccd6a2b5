"""The two sides a request can run on: the device (``edge.EdgeSide``) and the cloud (``cloud.CloudSide``).

Both stream ``edge_runtime.TokenEvent`` and raise ``SideFailure`` when they cannot (or can no longer)
answer; the orchestrator turns failures into retries, fallbacks and failovers.
"""

from sdk.backends.failure import SideFailure

__all__ = ["SideFailure"]
