"""Which replica gets a request: the balancing policies and prefix affinity.

- ``round_robin``: each candidate in turn (blind to load; the baseline).
- ``random``: a candidate drawn uniformly at random (blind to load; the baseline P2C's second choice improves on).
- ``least_loaded``: the shortest expected wait (``load.expected_wait``: requests weighted by what they still
  cost the replica, over what it can run at once, times how slow it has been going), ties broken at random.
- ``p2c``: power of two choices: the less loaded (by expected wait) of two candidates drawn at random. Nearly as good as
  least-loaded with fresh loads, and better with stale ones (it does not herd every request to the one
  replica that looked idle at the last poll).
- ``p2c_affinity``: requests that share a prompt prefix with an earlier one go to the replica that served it
  (its prefix cache holds that prefix), unless that replica's utilization exceeds the least-loaded
  candidate's by more than ``affinity_imbalance``; otherwise p2c.

Prefix keys (``affinity_keys``) cover the whole prompt, not its first message: they are a hash chain over the
prompt as one stream (for chat, each message's role and content, framed), started from the tenant, model and
version, with a key wherever a block of ``AFFINITY_BLOCK_CHARS`` characters ends and wherever a message ends.
Each key therefore names one exact prefix of the conversation, everything before it included. This is what
prefix-aware routers in front of vLLM do (vLLM production-stack's prefix-aware router keeps a trie of the
prompt's chunk hashes and sends a request to the endpoint holding its longest matching prefix; llm-d's
prefix-cache scorer chains block hashes, each over its parent's, and scores pods by the leading blocks they
hold), because vLLM's automatic prefix cache itself reuses only an exact leading run of blocks. The keys at
message ends are ours: the previous turn of a conversation (its history up to its last user message) ends at
a message boundary, which is rarely a block boundary, and it is the longest prefix the next turn shares with
anything the gateway has routed (the gateway never hashes the answers it streams back).

A request follows its longest remembered key (``AffinityTable.lookup``) and every key of a routed request is
then remembered for the replica it went to (a bounded LRU). So two conversations that share a system prompt
but differ later each follow their own history once they have one (their longer keys differ), and a shared
system prompt alone, the longest prefix of a new conversation, sends it where that prompt was last served. The
tenant is part of every key, so one tenant's prefixes never route another's requests.
"""

from __future__ import annotations

import collections
import hashlib
import random
from collections.abc import Sequence
from enum import StrEnum

from cloud_service.gateway.load import expected_wait, reference_pace, utilization
from cloud_service.gateway.membership import Replica
from cloud_service.wire.v1 import inference_pb2 as pb

AFFINITY_BLOCK_CHARS = 512
"""A prefix key every this many characters of the prompt stream (about 128 tokens: 8 of vLLM's 16-token
blocks), so that prompts sharing a long leading run of one message (a document, a tool list) share keys."""
AFFINITY_MIN_CHARS = 32
"""Prefixes shorter than this are not worth a key (the cache they would reuse is negligible)."""
AFFINITY_MAX_KEYS_PER_REQUEST = 64
"""Keys per request; a longer prompt keeps its last (longest) ones."""
KEY_BYTES = 16


class Affinity(StrEnum):
    """What prefix affinity did for one request (a metric label)."""

    HIT = "hit"
    """Went to the replica that served its longest known prefix."""
    YIELD = "yield"
    """Had a sticky replica, but it was too busy (the imbalance guard), saturated or gone: balanced instead."""
    MISS = "miss"
    """No known prefix: balanced."""


def affinity_keys(tenant: str, model: str, version: str, request: pb.GenerateRequest) -> list[bytes]:
    """The request's prefix keys, shortest first: the hash chain over its whole prompt (see the module
    docstring), one key at each block end and each message end at least ``AFFINITY_MIN_CHARS`` in."""
    digest = hashlib.blake2b(digest_size=KEY_BYTES)
    digest.update(f"{tenant}\x00{model}\x00{version}\x00".encode())
    if request.WhichOneof("input") == "chat":
        parts = [f"{message.role}\x1f{message.content}\x1e" for message in request.chat.messages]
    else:
        parts = [request.prompt]
    keys: list[bytes] = []
    size = 0  # characters of the stream hashed so far
    for part in parts:
        offset = 0
        while offset < len(part):
            take = min(len(part) - offset, AFFINITY_BLOCK_CHARS - size % AFFINITY_BLOCK_CHARS)
            digest.update(part[offset:offset + take].encode())
            offset += take
            size += take
            # a block ended, or the part did (the end of a message, or of a raw prompt)
            if size >= AFFINITY_MIN_CHARS and (size % AFFINITY_BLOCK_CHARS == 0 or offset == len(part)):
                keys.append(digest.digest())
    return keys[-AFFINITY_MAX_KEYS_PER_REQUEST:]


class AffinityTable:
    """Prefix key -> replica address, least recently used keys evicted beyond ``max_keys``."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self._table: collections.OrderedDict[bytes, str] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def lookup(self, keys: Sequence[bytes]) -> str | None:
        """The replica of the longest remembered key."""
        for key in reversed(keys):
            address = self._table.get(key)
            if address is not None:
                self._table.move_to_end(key)
                return address
        return None

    def record(self, keys: Sequence[bytes], address: str) -> None:
        table = self._table
        for key in keys:
            table[key] = address
            table.move_to_end(key)
        while len(table) > self.max_keys:
            table.popitem(last=False)


class Balancer:
    """Picks one of the candidates (available replicas that serve the request's model version)."""

    def __init__(self, policy: str, *, affinity_imbalance: float = 0.5, affinity_max_keys: int = 100_000,
                 rng: random.Random | None = None) -> None:
        self.policy = policy
        self.affinity_imbalance = affinity_imbalance
        self.affinity = AffinityTable(affinity_max_keys)
        self._rng = rng or random.Random()
        self._turn = 0

    @property
    def uses_affinity(self) -> bool:
        return self.policy == "p2c_affinity"

    def pick(self, candidates: Sequence[Replica], keys: Sequence[bytes] = ()) -> tuple[Replica, Affinity | None]:
        """The chosen replica and, under p2c_affinity, what affinity did. ``candidates`` is not empty."""
        if self.policy == "round_robin":
            self._turn += 1
            return candidates[self._turn % len(candidates)], None
        if self.policy == "random":
            return self._rng.choice(candidates), None
        if self.policy == "least_loaded":
            return self.least_loaded(candidates), None
        if not self.uses_affinity or not keys:
            return self.power_of_two(candidates), None
        address = self.affinity.lookup(keys)
        sticky = next((c for c in candidates if c.address == address), None) if address else None
        if sticky is not None and utilization(sticky) - min(utilization(c) for c in candidates) \
                <= self.affinity_imbalance:
            chosen, outcome = sticky, Affinity.HIT
        else:
            chosen, outcome = self.power_of_two(candidates), Affinity.MISS if address is None else Affinity.YIELD
        self.affinity.record(keys, chosen.address)
        return chosen, outcome

    def least_loaded(self, candidates: Sequence[Replica]) -> Replica:
        rng = self._rng.random
        reference = reference_pace(candidates)
        return min(candidates, key=lambda c: (expected_wait(c, reference), rng()))

    def power_of_two(self, candidates: Sequence[Replica]) -> Replica:
        if len(candidates) == 1:
            return candidates[0]
        first, second = self._rng.sample(range(len(candidates)), 2)
        a, b = candidates[first], candidates[second]
        reference = reference_pace(candidates)
        return a if expected_wait(a, reference) <= expected_wait(b, reference) else b
