"""Sign-in throttling (hostile-input sweep D2): repeated wrong passwords lock the account (and a client
address trying many accounts), on the portal's sign-in page and the admin's, the right password
included; the lock ends with its window, and a successful sign-in clears the account's failures.

Run with the cache the deployment has: Redis (production, tests) and per-process memory (the embedded
default, whose portal is one process)."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from django.urls import reverse

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["redis", "locmem"])
def throttle(request, settings):
    if request.param == "redis":
        # the test command always sets it (README, .ci/run): a run without it must fail, not skip
        assert os.environ.get("REDIS_URL"), "REDIS_URL is not set: run the suite with `make test`"
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                       "LOCATION": os.environ["REDIS_URL"], "KEY_PREFIX": uuid.uuid4().hex}}
    else:
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                       "LOCATION": uuid.uuid4().hex}}
    settings.LOGIN_FAILURE_LIMIT_PER_ACCOUNT = 5
    settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS = 8
    settings.LOGIN_FAILURE_WINDOW_SECONDS = 900
    settings.LOGIN_LOCKOUT_SECONDS = 900
    return settings


def sign_in(client, username, password, *, address="192.0.2.10", admin=False):
    url = reverse("admin_login") if admin else reverse("login")
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def signed_in(response) -> bool:
    return response.status_code == 302


def test_five_wrong_passwords_lock_the_account_even_for_the_right_password(client, throttle, platform_user):
    answers = [sign_in(client, "platform", f"wrong-{i}") for i in range(5)]
    assert [a.status_code for a in answers[:4]] == [200] * 4
    assert "didn&#x27;t match" in answers[0].content.decode() or "didn't match" in answers[0].content.decode()
    locked = answers[4]
    assert locked.status_code == 429 and int(locked["Retry-After"]) > 800
    assert "Too many failed sign-ins for this account" in locked.content.decode()
    assert "try again after" in locked.content.decode()

    refused = sign_in(client, "platform", PASSWORD)
    assert refused.status_code == 429 and not signed_in(refused)
    assert "_auth_user_id" not in client.session
    # the same account from another address is locked too; another account is not
    assert sign_in(client, "PLATFORM", PASSWORD, address="198.51.100.7").status_code == 429


def test_the_lock_ends_with_its_window(client, throttle, platform_user):
    throttle.LOGIN_LOCKOUT_SECONDS = 1.5
    for i in range(5):
        sign_in(client, "platform", f"wrong-{i}")
    assert sign_in(client, "platform", PASSWORD).status_code == 429
    deadline = time.monotonic() + 30
    answer = sign_in(client, "platform", PASSWORD)
    while answer.status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
        answer = sign_in(client, "platform", PASSWORD)
    assert signed_in(answer)


def test_a_successful_sign_in_clears_the_accounts_failures(client, throttle, platform_user):
    throttle.LOGIN_FAILURE_LIMIT_PER_ADDRESS = 20  # (the address keeps counting: 8 failures here)
    for i in range(4):
        sign_in(client, "platform", f"wrong-{i}")
    assert signed_in(sign_in(client, "platform", PASSWORD))
    client.logout()
    for i in range(4):
        assert sign_in(client, "platform", f"again-{i}").status_code == 200
    assert signed_in(sign_in(client, "platform", PASSWORD))


def test_one_address_guessing_many_accounts_is_locked_out_others_are_not(client, throttle, platform_user, engineer):
    for i in range(8):
        sign_in(client, f"someone-{i}", "guess", address="203.0.113.5")
    locked = sign_in(client, "engineer", PASSWORD, address="203.0.113.5")
    assert locked.status_code == 429 and "your network address" in locked.content.decode()
    assert signed_in(sign_in(client, "engineer", PASSWORD, address="198.51.100.7"))


def test_the_admin_sign_in_is_throttled_too(client, throttle, admin_user):
    answers = [sign_in(client, "admin", f"wrong-{i}", admin=True) for i in range(5)]
    assert [a.status_code for a in answers] == [200] * 4 + [429]
    refused = sign_in(client, "admin", PASSWORD, admin=True)
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.content.decode()
    assert client.get(reverse("admin:index")).status_code == 302  # still not signed in
    # and a lock taken on one page holds on the other
    assert sign_in(client, "admin", PASSWORD).status_code == 429
