"""The monitor's session cookie: what it holds (a session id, never a key digest), and that a
changed, foreign or old one is refused (app/auth/session.py)."""

from __future__ import annotations

from app.auth.session import SessionCookies

SECRET = "a session secret of at least 32 characters"  # noqa: S105 - a test value


def test_a_cookie_gives_back_the_session_id_it_was_issued_for() -> None:
    cookies = SessionCookies(SECRET, clock=lambda: 1000.0)
    session_id, value = cookies.issue()
    assert cookies.session_id(value) == session_id
    assert len(session_id) == 43  # 256 random bits
    other_id, _ = cookies.issue()
    assert other_id != session_id


def test_a_changed_cookie_or_one_signed_with_another_secret_is_refused() -> None:
    cookies = SessionCookies(SECRET, clock=lambda: 1000.0)
    session_id, value = cookies.issue()
    _, expires, signature = value.split(".")
    other_id, _ = cookies.issue()
    assert cookies.session_id(f"{other_id}.{expires}.{signature}") is None
    assert cookies.session_id(f"{session_id}.{int(expires) + 3600}.{signature}") is None
    assert cookies.session_id(SessionCookies("x" * 40, clock=lambda: 1000.0).issue()[1]) is None
    for malformed in (
        "",
        "...",
        "nope",
        f"{session_id}.{expires}",
        f"{session_id}.soon.{signature}",
    ):
        assert cookies.session_id(malformed) is None


def test_a_cookie_expires_after_its_max_age() -> None:
    now = [1000.0]
    cookies = SessionCookies(SECRET, max_age=60, clock=lambda: now[0])
    session_id, value = cookies.issue()
    now[0] = 1059.0
    assert cookies.session_id(value) == session_id
    now[0] = 1060.0
    assert cookies.session_id(value) is None
