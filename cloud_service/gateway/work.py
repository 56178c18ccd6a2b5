"""What the gateway's own requests still cost each replica, from what the gateway sees of them: the prompt it
forwarded, the ``max_tokens`` it asked for and the chunks coming back.

    cost of a request = PREFILL_TOKEN_WEIGHT x prompt tokens        (until its first chunk arrives)
                      + decode tokens still to come                 (counted max_tokens - tokens received)

    prompt tokens   ~ characters of the prompt (chat: roles and contents; plus the assistant prefix)
                      / CHARS_PER_TOKEN: the replica's exact count comes only with the last chunk, too late
                      to route on
    counted max_tokens = min(max_tokens, MAX_DECODE_TOKENS_COUNTED), or UNKNOWN_MAX_TOKENS when unset

A replica's *work* is the sum over the gateway's requests on it (``ReplicaWork``, updated as requests are
sent, as chunks arrive and as streams end: integer arithmetic, no per-token allocation). ``CostScale``
keeps the mean cost of a routed request (an exponentially weighted mean shared by every replica of a
gateway), so work can be read in *average requests*: ``load.utilization`` divides a replica's work by it, and
one average request counts 1, as it did when requests were counted. Two requests waiting on the same replica
then weigh what they will cost it: a 4000-token prompt being prefilled delays every first token behind it,
and a request with 10 tokens left frees its slot (and KV) soon.

Each replica's *pace* (``DecodePace``) is the seconds per generated token its streams have been coming back at
(an exponentially weighted mean over the chunks after each stream's first), so the balancer can tell a slow
replica from a fast one holding the same work (``load.expected_wait``): work counts what a replica holds, pace
how fast it gets through it.

Prefill is weighted below decode because a prompt token costs a replica far less time than a generated
one: a GPU prefills a 7-8B model at thousands of tokens/s (compute-bound, about 0.25 ms/token on a 24 GB
card), while each decoded token takes a whole step (30+ ms, shared by a batch of about 30: about 1 ms per
token and sequence). The weight is a round figure of that ratio, not a fit to a benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cloud_service.wire.v1 import inference_pb2 as pb

CHARS_PER_TOKEN = 4
"""Characters per token of English text under the common BPE tokenizers (a rough, model-independent count)."""
PREFILL_TOKEN_WEIGHT = 0.25
"""Cost of prefilling one prompt token relative to decoding one token (see the module docstring)."""
UNKNOWN_MAX_TOKENS = 256
"""Decode tokens assumed for a request that sets no max_tokens (a typical chat answer is a few hundred)."""
MAX_DECODE_TOKENS_COUNTED = 1024
"""max_tokens is a bound, not a forecast: a caller that asks for 8192 out of caution counts at most this many."""
COST_SCALE_WEIGHT = 0.05
"""Weight of each routed request in the mean request cost (the mean follows the last ~20 requests)."""
PACE_WEIGHT = 0.05
"""Weight of each chunk's seconds per token in a replica's pace (about the last 20 chunks: a second or two of a
busy replica's streams, so a slowdown shows within a few requests)."""


def prompt_tokens(request: pb.GenerateRequest) -> int:
    """About how many tokens the replica will prefill for ``request`` (see the module docstring)."""
    if request.WhichOneof("input") == "chat":
        chars = sum(len(m.role) + len(m.content) for m in request.chat.messages)
    else:
        chars = len(request.prompt)
    return max(1, math.ceil((chars + len(request.assistant_prefix)) / CHARS_PER_TOKEN))


def decode_tokens(request: pb.GenerateRequest) -> int:
    """Tokens the request may generate, as counted for load (see the module docstring)."""
    if not request.sampling.HasField("max_tokens"):
        return UNKNOWN_MAX_TOKENS
    return min(request.sampling.max_tokens, MAX_DECODE_TOKENS_COUNTED)


@dataclass(eq=False)
class RequestWork:
    """One forwarded request's part of its replica's work."""

    prompt_tokens: int
    decode_tokens: int
    """Still to come."""
    prefilled: bool = False
    """Its first chunk arrived (its prompt no longer counts)."""
    last_chunk_at: float | None = None
    """When its last chunk arrived (the start of the next chunk's pace sample)."""

    @classmethod
    def of(cls, request: pb.GenerateRequest) -> RequestWork:
        return cls(prompt_tokens(request), decode_tokens(request))

    @property
    def cost(self) -> float:
        return (0.0 if self.prefilled else PREFILL_TOKEN_WEIGHT * self.prompt_tokens) + self.decode_tokens


class CostScale:
    """The mean cost of a routed request (exponentially weighted); 1.0 until the first one."""

    def __init__(self) -> None:
        self.mean = 1.0
        self.observed = 0

    def observe(self, cost: float) -> None:
        self.observed += 1
        weight = max(COST_SCALE_WEIGHT, 1 / self.observed)  # a plain mean over the first requests
        self.mean += weight * (max(cost, 1.0) - self.mean)


class DecodePace:
    """Seconds per generated token of one replica's streams (exponentially weighted); None until measured."""

    def __init__(self) -> None:
        self.seconds_per_token: float | None = None
        self.samples = 0

    def observe(self, seconds: float, tokens: int) -> None:
        if tokens <= 0 or seconds < 0:
            return
        sample = seconds / tokens
        self.samples += 1
        weight = max(PACE_WEIGHT, 1 / self.samples)
        before = self.seconds_per_token
        self.seconds_per_token = sample if before is None else before + weight * (sample - before)


@dataclass(eq=False)
class ReplicaWork:
    """The sum of the costs of the gateway's requests on one replica, kept as two token totals."""

    scale: CostScale = field(default_factory=CostScale)
    prefill_tokens: int = 0
    """Prompt tokens of requests whose first chunk has not arrived."""
    decode_tokens: int = 0
    """Decode tokens still to come, over every request."""
    pace: DecodePace = field(default_factory=DecodePace)

    @property
    def cost(self) -> float:
        return PREFILL_TOKEN_WEIGHT * self.prefill_tokens + self.decode_tokens

    @property
    def requests(self) -> float:
        """The work in average requests (``cost / scale.mean``)."""
        return self.cost / self.scale.mean

    def add(self, work: RequestWork) -> None:
        """A request was sent to the replica; it also updates the mean request cost."""
        self.scale.observe(work.cost)
        self.decode_tokens += work.decode_tokens
        if not work.prefilled:
            self.prefill_tokens += work.prompt_tokens

    def received(self, work: RequestWork, tokens: int, now: float | None = None) -> None:
        """A chunk of ``tokens`` tokens arrived for the request at ``now`` (its first ends the prefill; each
        later one is a pace sample: the time since the one before over its tokens)."""
        if not work.prefilled:
            work.prefilled = True
            self.prefill_tokens -= work.prompt_tokens
        elif now is not None and work.last_chunk_at is not None:
            self.pace.observe(now - work.last_chunk_at, tokens)
        if now is not None and tokens:
            work.last_chunk_at = now
        done = min(tokens, work.decode_tokens)
        work.decode_tokens -= done
        self.decode_tokens -= done

    def remove(self, work: RequestWork) -> None:
        """The request's stream ended (or failed): what it had left no longer counts."""
        if not work.prefilled:
            work.prefilled = True
            self.prefill_tokens -= work.prompt_tokens
        self.decode_tokens -= work.decode_tokens
        work.decode_tokens = 0
