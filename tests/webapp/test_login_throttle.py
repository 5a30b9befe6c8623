"""Logins: password guessing is throttled by django-axes, and passwords must be strong."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError

from webapp.demo.services import ensure_demo_user

RIGHT = "alice-password-1"  # tests/people.py


def _login(client, password: str, username: str = "alice", address: str = "127.0.0.1"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def _fail_until_locked(client, username: str = "alice", address: str = "127.0.0.1") -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = _login(client, "wrong-guess", username, address)
        assert response.status_code in (200, 429)


@pytest.mark.django_db
def test_wrong_passwords_lock_out_the_next_attempt_even_with_the_right_one(client, alice):
    for attempt in range(settings.AXES_FAILURE_LIMIT - 1):
        response = _login(client, "wrong-guess")
        assert response.status_code == 200, attempt  # the form again, with its error
        assert b"Please enter a correct username and password" in response.content
    _login(client, "wrong-guess")  # the last allowed failure

    response = _login(client, RIGHT)
    assert response.status_code == 429
    page = response.content.decode()
    assert "Login locked" in page and "Try again in 15 minutes" in page
    assert "Traceback" not in page
    # Locked means not logged in: the right password did not open a session.
    assert client.get("/projects/").status_code == 302


@pytest.mark.django_db
def test_fewer_failures_than_the_limit_still_let_the_right_password_in(client, alice):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "wrong-guess")
    response = _login(client, RIGHT)
    assert response.status_code == 302 and client.get("/projects/").status_code == 200


@pytest.mark.django_db
def test_a_successful_login_resets_the_count(client, alice):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "wrong-guess")
    assert _login(client, RIGHT).status_code == 302
    client.post("/logout/")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "wrong-guess")
    assert _login(client, RIGHT).status_code == 302


@pytest.mark.django_db
def test_lockout_is_for_that_username_from_that_address_only(client, alice, bob):
    _fail_until_locked(client, "alice", "10.0.0.1")
    assert _login(client, RIGHT, "alice", "10.0.0.1").status_code == 429
    # A guesser elsewhere cannot lock Alice out of her own desk, nor Bob out of his account.
    assert _login(client, RIGHT, "alice", "10.0.0.2").status_code == 302
    client.post("/logout/")
    assert _login(client, "bob-password-1", "bob", "10.0.0.1").status_code == 302


@pytest.mark.django_db
def test_api_tokens_keep_working_while_the_login_is_locked(client, api, alice, project):
    _fail_until_locked(client)
    assert _login(client, RIGHT).status_code == 429
    response = api(alice, "GET", "/api/v1/projects")
    assert response.status_code == 200
    assert project.name in response.content.decode()


@pytest.mark.parametrize(
    "password, says",
    [
        ("short-1A", "too short"),
        ("password1234", "too common"),
        ("918273645501", "entirely numeric"),
        ("alice-example-com", "too similar"),
    ],
)
@pytest.mark.django_db
def test_weak_passwords_are_refused(alice, password, says):
    alice.email = "alice@example.com"
    with pytest.raises(ValidationError) as refused:
        validate_password(password, user=alice)
    assert says in " ".join(refused.value.messages)


@pytest.mark.django_db
def test_the_demo_password_passes_the_validators(monkeypatch):
    monkeypatch.delenv("RUNWRIGHT_DEMO_PASSWORD", raising=False)
    user, password, _ = ensure_demo_user()
    validate_password(password, user=user)  # raises if the generated password is too weak
