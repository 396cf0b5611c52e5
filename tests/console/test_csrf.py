"""The console's CSRF check: the session's own token passes, anything else is refused with a
plain False (never an exception, whatever the form field holds)."""

from __future__ import annotations

from tidings.console.security import csrf_token, csrf_valid

SECRET = bytes(range(32))


def test_own_token_is_valid_and_others_are_not() -> None:
    token = csrf_token(SECRET, "session-a")
    assert csrf_valid(SECRET, "session-a", token)
    assert not csrf_valid(SECRET, "session-b", token)
    assert not csrf_valid(bytes(32), "session-a", token)
    flipped = ("0" if token[0] != "0" else "1") + token[1:]
    assert not csrf_valid(SECRET, "session-a", flipped)
    assert not csrf_valid(SECRET, None, token) and not csrf_valid(SECRET, "", token)


def test_malformed_tokens_are_refused_without_an_error() -> None:
    token = csrf_token(SECRET, "session-a")
    for presented in (None, 7, b"x" * 64, "", token[:-1], token + "0", "é" * 64, "\u0661" * 64,
                      token[:-1] + "\udc80"):
        assert not csrf_valid(SECRET, "session-a", presented)
