"""Tandem's SDK, for app developers: one client that answers each request on the device or in the cloud.

    from sdk import HybridClient

    with HybridClient("tandem.toml") as client:
        response = client.chat.completions.create(messages=[{"role": "user", "content": "Hi"}])
        print(response.choices[0].message.content, response.route.side, response.route.reasons)

Rooms: ``policy`` (the configuration), ``signals/`` (memory, battery, thermal, cloud link), ``difficulty``,
``bundle_routing`` and ``decision`` (where a request goes and why), ``backends/`` (the device and cloud sides,
each ``generate`` a ``SideStream`` that carries the model serving it), ``orchestrator`` (fallback, failover,
cascade; it owns the routing state), ``client`` (the OpenAI-shaped surface), ``route``, ``completions``,
``telemetry``, ``provisioning`` (bundle download), ``errors`` (one root, ``TandemError``). It imports only
``edge_runtime`` and the cloud's client side (gRPC, or httpx for an OpenAI-compatible cloud). Install with
the ``edge`` extra; importing ``sdk`` never loads torch or transformers.
"""

from importlib.metadata import version as _version

from sdk.client import AsyncChatStream, AsyncHybridClient, ChatStream, HybridClient
from sdk.completions import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    Choice,
    ChoiceDelta,
    ChunkChoice,
    CompletionUsage,
)
from sdk.errors import ClientClosedError, ClosedError, NoRouteError, PolicyError, RequestError, TandemError
from sdk.policy import (
    CascadeSettings,
    CloudApi,
    CloudSettings,
    DeviceSettings,
    Mode,
    Policy,
    RetrySettings,
    RoutingSettings,
    load_policy,
)
from sdk.reasons import Reason, Side
from sdk.route import Attempt, Continuation, Route, Switch, SwitchKind
from sdk.signals.errors import SignalError, SignalsClosedError
from sdk.telemetry import RequestRecord

__version__ = _version("tandem-inference")

__all__ = [
    "AsyncChatStream",
    "AsyncHybridClient",
    "Attempt",
    "CascadeSettings",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatStream",
    "Choice",
    "ChoiceDelta",
    "ChunkChoice",
    "ClientClosedError",
    "ClosedError",
    "CloudApi",
    "CloudSettings",
    "CompletionUsage",
    "Continuation",
    "DeviceSettings",
    "HybridClient",
    "Mode",
    "NoRouteError",
    "Policy",
    "PolicyError",
    "Reason",
    "RequestError",
    "RequestRecord",
    "RetrySettings",
    "Route",
    "RoutingSettings",
    "Side",
    "SignalError",
    "SignalsClosedError",
    "Switch",
    "SwitchKind",
    "TandemError",
    "__version__",
    "load_policy",
]
