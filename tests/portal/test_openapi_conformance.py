"""The OpenAPI document tells the truth: schemathesis drives every REST API operation from /api/v1/schema/.

Each operation is called as a platform team member and as a data engineer, with the examples, coverage
(boundary and negative values) and fuzzing phases, and every check that applies: no 5xx, only documented
status codes, content types and headers, responses that match their schema, refused negative data, accepted
positive data, and auth that is really checked. Bounded and derandomized: the same requests on every run.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

SEED = 20261204
EXAMPLES_PER_OPERATION = 6

POSITIVE_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis' default
# Rules no JSON Schema can state, so a request the document allows may still be refused, with the status
# and message the document gives for it:
SEMANTIC_REFUSALS = [
    # the schema must be valid Avro (and under the size limit)
    ({"contracts_check_create", "contracts_versions_create"}, ["400", "413"]),
    ({"registry_register", "registry_lookup", "registry_compatibility_version_check",
      "registry_compatibility_subject_check"}, ["422"]),
    # a price starts on an hour and not in the past without recompute; a recompute names a priced model, in the past
    ({"prices_create", "prices_recompute_create"}, ["400"]),
]

CONFIG = SchemathesisConfig.from_dict({
    "seed": SEED,
    "output": {"sanitization": {"enabled": False}},
    "generation": {"max-examples": EXAMPLES_PER_OPERATION, "database": "none"},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
               "stateful": {"enabled": False}},
    "operations": [
        {"include-operation-id": sorted(ids),
         "checks": {"positive_data_acceptance": {"expected-statuses": POSITIVE_STATUSES + extra}}}
        for ids, extra in SEMANTIC_REFUSALS
    ],
})

schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application(), config=CONFIG).exclude(
    path_regex="^/collect/")


@pytest.fixture(scope="module")
def seeded_tokens(django_db_setup, django_db_blocker):
    """Made once for the module, inside a transaction rolled back at its end (each test's own transaction is
    a savepoint within it): a platform team member and a data engineer with a token each; the demo's web-chat
    source with its first contract approved (what the document's path examples name); the canonical contract."""
    from django.db import transaction

    from contracts.presets import preset_load
    from contracts.services import canonical_contract_ensure, preset_versions_load, source_create
    from portal.roles import Role
    from portal.services import api_token_create, role_groups_ensure, team_ensure

    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
        groups = role_groups_ensure()
        team = team_ensure(name="chat-platform")
        users = {}
        for username, role in (("platform", Role.PLATFORM), ("engineer", Role.DATA_ENGINEER)):
            users[username] = get_user_model().objects.create_user(username=username, password="unused-pw-123")
            users[username].groups.add(groups[role])
        team.members.add(users["platform"])
        preset = preset_load("web-chat")
        source, _ = source_create(actor=users["platform"], team=team, name="web-chat", platform=preset["platform"],
                                  kind=preset["kind"], product=preset.get("product", ""))
        spec = dict(preset["contracts"][0], versions=preset["contracts"][0]["versions"][:1])
        preset_versions_load(actor=users["platform"], reviewer=users["engineer"], source=source, contracts=[spec])
        canonical_contract_ensure()
        tokens = {username: api_token_create(user=user, name="schemathesis")[1] for username, user in users.items()}
    yield tokens
    with django_db_blocker.unblock():
        transaction.set_rollback(True)
        outer.__exit__(None, None, None)


@pytest.fixture
def role_tokens(seeded_tokens, db):
    """The tokens, with the requests made in this test's transaction."""
    from django.core import signals
    from django.db import close_old_connections

    # As Django's test client does: a request must not close the connection that holds the test's transaction.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield seeded_tokens
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_the_api_answers_as_its_openapi_document_says(case, role_tokens):
    for token in role_tokens.values():
        case.call_and_validate(headers={"Authorization": f"Token {token}"})
