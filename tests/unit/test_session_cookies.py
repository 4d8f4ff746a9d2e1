"""The monitor's session cookie: what it holds, and that a changed, foreign or old one is
refused (app/auth/session.py)."""

from __future__ import annotations

from app.auth.session import SessionCookies

DIGEST = "ab" * 32
SECRET = "a session secret of at least 32 characters"  # noqa: S105 - a test value


def test_a_cookie_gives_back_the_key_digest_it_was_issued_for() -> None:
    cookies = SessionCookies(SECRET, clock=lambda: 1000.0)
    value = cookies.issue(DIGEST)
    assert cookies.key_digest(value) == DIGEST


def test_a_changed_cookie_or_one_signed_with_another_secret_is_refused() -> None:
    cookies = SessionCookies(SECRET, clock=lambda: 1000.0)
    value = cookies.issue(DIGEST)
    digest, expires, signature = value.split(".")
    assert cookies.key_digest(f"{'cd' * 32}.{expires}.{signature}") is None
    assert cookies.key_digest(f"{digest}.{int(expires) + 3600}.{signature}") is None
    assert cookies.key_digest(SessionCookies("x" * 40, clock=lambda: 1000.0).issue(DIGEST)) is None
    for malformed in ("", "...", "nope", f"{digest}.{expires}", f"{digest}.soon.{signature}"):
        assert cookies.key_digest(malformed) is None


def test_a_cookie_expires_after_its_max_age() -> None:
    now = [1000.0]
    cookies = SessionCookies(SECRET, max_age=60, clock=lambda: now[0])
    value = cookies.issue(DIGEST)
    now[0] = 1059.0
    assert cookies.key_digest(value) == DIGEST
    now[0] = 1060.0
    assert cookies.key_digest(value) is None
