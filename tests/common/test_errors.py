"""Domain error messages are bounded, so a status always fits gRPC's metadata limit."""

from __future__ import annotations

from maas.common import errors


def test_long_messages_are_cut_to_the_bound_in_utf8_bytes() -> None:
    for text in ("k" * 1_000_000, "\u00e9" * 300_000, "\U0001f600" * 100_000):
        exc = errors.InvalidArgument(text)
        assert len(exc.message.encode()) <= errors.MAX_MESSAGE_BYTES
        assert str(exc) == exc.message
        assert exc.message.startswith(text[:100])


def test_short_messages_are_kept_whole() -> None:
    text = "model.args: 'x' not accepted by 'mlp'"
    assert errors.NotFound(text).message == text
    assert errors.Internal("k" * errors.MAX_MESSAGE_BYTES).message == "k" * errors.MAX_MESSAGE_BYTES


def test_some_of_names_a_few_keys_and_counts_the_rest() -> None:
    assert errors.some_of({"b", "a"}) == "'a', 'b'"
    listed = errors.some_of(f"k{i:04d}" for i in range(2000))
    assert listed.startswith("'k0000', 'k0001'") and listed.endswith(" and 1995 more")
