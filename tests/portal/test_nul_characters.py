"""A NUL character (%00) in an address never gives a 500 (PostgreSQL refuses NUL in a query): in a path
it is a 404, in a query parameter a 400 that names the parameter, on every route of the portal, the API,
the registry, the collectors and the admin."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import URLResolver, get_resolver

pytestmark = pytest.mark.django_db(transaction=True)  # a failed query must not poison the next request


def route_patterns(patterns=None, prefix: str = ""):
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from route_patterns(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern)


def concrete(pattern: str, value: str) -> str:
    """A path for a route pattern (path() or re_path() syntax) with `value` in every parameter."""
    path = re.sub(r"<(?:\w+:)?\w+>", value, pattern)
    path = re.sub(r"\(\?P<\w+>[^)]*\)", value, path)
    return "/" + path.lstrip("^").rstrip("$").replace("\\", "")


def test_nul_in_any_path_parameter_or_query_parameter_is_404_or_400(admin_user, chat_v1):
    client = Client(raise_request_exception=False)
    routes = sorted(set(route_patterns()))
    with_params = [r for r in routes if "<" in r]
    assert len(with_params) > 20  # the sweep reaches the contract, source, version, quarantine and admin routes
    answers = {}
    for route in with_params:
        for method in ("get", "post"):
            client.force_login(admin_user)
            answers[(method, concrete(route, "web%00chat"))] = getattr(client, method)(
                concrete(route, "web%00chat")).status_code
    for route in routes:
        if "logout" in route:
            continue
        client.force_login(admin_user)
        path = concrete(route, "web-chat.chat_event")
        for query in ("?q=%00", "?source=web%00chat&page=1", "?x%00=1"):
            answers[("get", path + query)] = client.get(path + query).status_code
    wrong = {key: status for key, status in answers.items()
             if status != (404 if "%00" in key[1].partition("?")[0] else 400)}
    assert wrong == {}


def test_the_answers_say_what_was_wrong(client, admin_user, chat_v1):
    client.force_login(admin_user)
    response = client.get("/contracts/?team=a%00b")
    assert response.status_code == 400 and "'team'" in response.content.decode()
    response = client.get("/api/v1/contracts/?source=%00")
    assert response.status_code == 400 and response.json()["error"] == "invalid_query"
    response = client.get("/api/v1/contracts/web-chat%00.chat_event/")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    response = client.get("/registry/subjects/web-chat%00.chat_event/versions")
    assert response.status_code == 404 and response.json()["error_code"] == 40400
    response = client.get("/contracts/web-chat%00.chat_event/")
    assert response.status_code == 404 and 'data-testid="not-found"' in response.content.decode()
