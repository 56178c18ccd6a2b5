"""Continuing a stream on another replica after the one serving it failed mid-answer.

    resume = Resume(upstream)          # the request as first forwarded
    resume.add(chunk)                  # each chunk forwarded to the caller
    upstream = resume.request(suffix)  # after a failure: the request that goes on from what was delivered
    chunk = resume.trim(chunk)         # each chunk of the continuing stream, before it is forwarded

The continuation is the original request with the text delivered so far appended to its assistant prefix, the
delivered token ids as ``prefix_tokens`` (tagged with the vocabulary the first chunk named: a replica of the
same vocabulary feeds those ids rather than re-tokenizing the text, so a greedy answer is exactly the
uninterrupted one) and ``max_tokens`` reduced by the tokens it covers. Tokens the caller received without
their text (``unreleased_tokens``: part of a character, or the possible start of a stop string) are generated
again, since their text exists only in the failed replica's detokenizer: ``trim`` drops the ids the caller
already has from the continuing stream and keeps their text, so the caller sees each id and each character
once. The caller's usage covers the whole answer: its completion counts every token id it received, its
prompt the original prompt (the continuing replica's prompt less the delivered tokens it was given as prefix).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloud_service.wire.v1 import inference_pb2 as pb


@dataclass(eq=False)
class Resume:
    """What reached the caller of one gateway stream, and how to go on from it."""

    original: pb.GenerateRequest
    vocabulary: str = ""
    """The fingerprint the stream's first chunk named ("" when none did: the text is all a replica gets)."""
    text: str = ""
    ids: list[int] = field(default_factory=list)
    """Every token id the caller received, in order."""
    unreleased: int = 0
    """Trailing ids of ``ids`` whose text the caller has not received."""
    skip: int = 0
    """Leading ids of the continuing stream that the caller already has (``trim`` drops them)."""
    resumed_prefix: int = 0
    """Tokens given to the continuing replica as its prefix (its prompt count includes them)."""
    switches: int = 0
    """Replicas the stream moved to after a failure."""

    def add(self, chunk: pb.GenerateChunk) -> None:
        """A chunk was forwarded to the caller."""
        if chunk.vocabulary and not self.vocabulary:
            self.vocabulary = chunk.vocabulary
        self.text += chunk.text
        self.ids.extend(chunk.token_ids)
        # a chunk counts its own unreleased ids; one with text released every id before them
        self.unreleased = chunk.unreleased_tokens if chunk.text else self.unreleased + chunk.unreleased_tokens

    @property
    def released(self) -> list[int]:
        """The ids whose text the caller has."""
        return self.ids[:len(self.ids) - self.unreleased] if self.unreleased else list(self.ids)

    def request(self, request_id: str) -> pb.GenerateRequest:
        """The request that continues after what was delivered, with the upstream id ``request_id``."""
        released = self.released
        follow = pb.GenerateRequest()
        follow.CopyFrom(self.original)
        follow.request_id = request_id
        self.skip = self.unreleased
        self.switches += 1
        if not released and not self.text:
            self.resumed_prefix = 0
            return follow
        follow.assistant_prefix = self.original.assistant_prefix + self.text
        if self.vocabulary and released:
            given = self.original.prefix_tokens if self.original.HasField("prefix_tokens") else None
            ids, text = released, self.text
            if given is not None and given.vocabulary == self.vocabulary:
                ids, text = [*given.ids, *released], given.text + self.text
            follow.prefix_tokens.CopyFrom(pb.PrefixTokens(vocabulary=self.vocabulary, ids=ids, text=text))
        else:
            follow.ClearField("prefix_tokens")
        if self.original.sampling.HasField("max_tokens"):
            follow.sampling.max_tokens = max(1, self.original.sampling.max_tokens - len(released))
        self.resumed_prefix = len(released)
        return follow

    def trim(self, chunk: pb.GenerateChunk) -> pb.GenerateChunk:
        """A chunk of the continuing stream as the caller gets it: without the ids it already has, without
        the version and vocabulary (the first chunk named them), with the whole answer's usage."""
        if not self.switches:
            return chunk
        chunk.model_version, chunk.vocabulary = "", ""
        if self.skip:
            drop = min(self.skip, len(chunk.token_ids))
            self.skip -= drop
            ids, logprobs = list(chunk.token_ids[drop:]), list(chunk.logprobs[drop:])
            del chunk.token_ids[:], chunk.logprobs[:]
            chunk.token_ids.extend(ids)
            chunk.logprobs.extend(logprobs)
            chunk.unreleased_tokens = min(chunk.unreleased_tokens, len(ids))
        if chunk.HasField("usage"):
            usage = chunk.usage
            prompt = max(0, usage.prompt_tokens - self.resumed_prefix)
            chunk.usage.CopyFrom(pb.Usage(prompt_tokens=prompt, completion_tokens=len(self.ids) + len(chunk.token_ids),
                                          cached_tokens=min(usage.cached_tokens, prompt)))
        return chunk


__all__ = ["Resume"]
