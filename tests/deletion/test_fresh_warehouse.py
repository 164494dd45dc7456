"""A fresh installation (``make run`` from a clone): the ingest tables exist but no models run has created the
identity graph yet. A ticket still expands (to the identifiers given) and its warehouse steps run and verify
zero remaining, instead of failing on a missing IDENTITY schema."""

from __future__ import annotations

import copy

import pytest

from deletion.erasure_types import ErasureSubject, Identifier, IdentifierKind, email_sha256
from deletion.identity_expansion import expand_identifiers
from deletion.warehouse_erasure import warehouse_steps
from tests.warehouse.conftest import warehouse_conn, warehouse_database  # noqa: F401 - fixtures
from warehouse.load import warehouse_query


@pytest.mark.django_db
def test_a_warehouse_before_its_first_models_run_expands_and_erases(settings, warehouse_conn):  # noqa: F811
    settings.SNOWFLAKE = {**copy.deepcopy(settings.SNOWFLAKE), "database": warehouse_conn.database}
    assert not warehouse_query(warehouse_conn, f"SELECT SCHEMA_NAME FROM {warehouse_conn.database}."  # noqa: S608
                                               "INFORMATION_SCHEMA.SCHEMATA WHERE SCHEMA_NAME = 'IDENTITY'")
    given = Identifier(IdentifierKind.EMAIL, "lena.vogt@example.de")

    expansion = expand_identifiers([given])                       # its own connection, as a ticket does
    assert {li.identifier.id_key for li in expansion.linked} <= {given.id_key,
                                                                 f"email_sha256:{email_sha256(given.value)}"}
    assert expansion.held_reasons == ()

    subject = ErasureSubject("DEL-1", (given,), ())
    results = [step.run(subject) for step in warehouse_steps()]
    assert [(r.removed, r.remaining) for r in results] == [(0, 0)] * len(results)
