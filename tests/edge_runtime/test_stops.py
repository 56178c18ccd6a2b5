"""StopMatcher over a text stream: text passes through unless it could begin a stop string, held text is released
in order once it cannot, the match and everything after it are never released, and the result does not depend
on how the stream is cut into chunks (checked over many seeded random chunkings)."""

from __future__ import annotations

import itertools
import random

import pytest

from edge_runtime.stops import StopMatcher


def _run(stops: tuple[str, ...], chunks: list[str]) -> tuple[list[str], bool, str]:
    """Feed chunks until a match; (released pieces, matched, flushed text when no match)."""
    matcher = StopMatcher(stops)
    released = []
    for chunk in chunks:
        text, matched = matcher.feed(chunk)
        released.append(text)
        if matched:
            return released, True, ""
    return released, False, matcher.flush()


def _random_chunks(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, len(text) - 1))) if len(text) > 1 else []
    bounds = [0, *cuts, len(text)]
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    # Empty chunks happen too (a token that adds no text).
    for _ in range(rng.randint(0, 3)):
        chunks.insert(rng.randint(0, len(chunks)), "")
    return chunks


def test_no_stops_passes_text_through() -> None:
    matcher = StopMatcher(())
    for chunk in ["Hello", ",", " wor", "ld", "", "\n"]:
        assert matcher.feed(chunk) == (chunk, False)
    assert matcher.flush() == ""


def test_text_that_cannot_start_a_stop_is_released_at_once() -> None:
    matcher = StopMatcher(["###"])
    assert matcher.feed("Hello") == ("Hello", False)
    assert matcher.feed(" world") == (" world", False)
    assert matcher.flush() == ""


def test_stop_inside_one_chunk_truncates_before_it() -> None:
    matcher = StopMatcher(["</answer>"])
    assert matcher.feed("The answer is 42.</answer> and more") == ("The answer is 42.", True)


def test_stop_at_the_very_start() -> None:
    assert StopMatcher(["\n\n"]).feed("\n\nrest") == ("", True)


def test_stop_split_char_by_char_is_never_partially_released() -> None:
    stop = "<|end|>"
    text = "abc" + stop + "tail"
    matcher = StopMatcher([stop])
    released = ""
    for char in text:
        piece, matched = matcher.feed(char)
        released += piece
        assert "<" not in released, "a possible stop prefix was released"
        if matched:
            break
    assert matched
    assert released == "abc"


def test_stop_split_across_chunks_in_the_middle() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("one ST") == ("one ", False)
    assert matcher.feed("O") == ("", False)
    assert matcher.feed("P two") == ("", True)


def test_held_text_that_is_not_a_stop_is_released_later_in_order() -> None:
    matcher = StopMatcher(["<stop>"])
    assert matcher.feed("a <st") == ("a ", False)
    assert matcher.feed("ar") == ("<star", False)  # "<star" is no stop prefix: released, in order
    assert matcher.feed("> b <") == ("> b ", False)
    assert matcher.feed("<stop") == ("<", False)  # the first "<" cannot start the stop any more
    assert matcher.feed(">") == ("", True)


def test_a_held_prefix_that_starts_again_keeps_the_new_prefix() -> None:
    matcher = StopMatcher(["aab"])
    assert matcher.feed("a") == ("", False)
    assert matcher.feed("a") == ("", False)
    assert matcher.feed("a") == ("a", False)  # "aaa": only the last "aa" may still begin "aab"
    assert matcher.feed("b") == ("", True)


def test_flush_releases_held_text() -> None:
    matcher = StopMatcher(["\nUser:"])
    assert matcher.feed("Bye.\nUs") == ("Bye.", False)
    assert matcher.flush() == "\nUs"
    assert matcher.flush() == ""


def test_several_stops_the_earliest_match_wins() -> None:
    assert StopMatcher(["world", "lo"]).feed("hello world") == ("hel", True)
    assert StopMatcher(["lo", "world"]).feed("hello world") == ("hel", True)
    assert StopMatcher(["xyz", "o w", "d"]).feed("hello world") == ("hell", True)


def test_several_stops_the_earliest_match_wins_across_chunks() -> None:
    released, matched, _ = _run(("END", "\n\n"), ["a\n", "\nb E", "ND"])
    assert matched
    assert "".join(released) == "a"


def test_a_longer_stop_is_held_while_a_shorter_one_cannot_match() -> None:
    matcher = StopMatcher(["!", "<|im_end|>"])
    assert matcher.feed("Hi <|im_") == ("Hi ", False)
    assert matcher.feed("end|> more") == ("", True)


def test_multibyte_and_unicode_stops() -> None:
    released, matched, _ = _run(("日本",), ["こんにちは", "日", "本語"])
    assert matched
    assert "".join(released) == "こんにちは"


# Stop sets where no stop is a substring of another: then the first match in the whole text is also the first
# one the stream completes, so the answer is the same for every chunking.
STOP_SETS = [
    ("</s>",),
    ("\n\n", "###"),
    ("User:", "Assistant:", "<|im_end|>"),
    ("aab", "abb"),
    ("ab", "ba"),
    ("x",),
]
ALPHABETS = ["ab", "ab\n#", "abc<>/s", "User:Asistn \n<|im_end>"]


@pytest.mark.parametrize("stops", STOP_SETS)
def test_any_chunking_gives_input_up_to_the_first_match(stops: tuple[str, ...]) -> None:
    rng = random.Random(20240607)
    matched_cases = unmatched_cases = 0
    for trial in range(300):
        alphabet = ALPHABETS[trial % len(ALPHABETS)]
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        if trial % 5 == 0:  # make sure plenty of texts do contain a stop
            at = rng.randint(0, len(text))
            text = text[:at] + rng.choice(stops) + text[at:]
        hits = [i for i in (text.find(s) for s in stops) if i >= 0]
        expected = text[: min(hits)] if hits else text
        for _ in range(5):
            chunks = _random_chunks(text, rng) if text else [""]
            released, matched, flushed = _run(stops, chunks)
            assert matched == bool(hits), (stops, chunks)
            assert "".join(released) + flushed == expected, (stops, chunks)
            if not matched:
                # Before the flush, whatever was held is a proper prefix of a stop at the end of the text.
                held = text[len("".join(released)) :]
                assert held == flushed
                assert not held or any(s.startswith(held) and s != held for s in stops)
        matched_cases += bool(hits)
        unmatched_cases += not hits
    assert matched_cases > 50 and unmatched_cases > 50


def test_char_by_char_and_whole_agree_on_a_long_text() -> None:
    stops = ("<|eot_id|>", "\nQ:")
    text = "Answer: the sky is blue because of Rayleigh scattering.\n<|eot_" + "id|> ignored"
    whole = _run(stops, [text])
    by_char = _run(stops, list(text))
    assert whole[1] and by_char[1]
    assert "".join(whole[0]) == "".join(by_char[0]) == text[: text.index("<|eot_id|>")]
