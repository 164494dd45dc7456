"""Hostile bodies never crash the API: every answer is a JSON 2xx/4xx, and nothing is saved by a check."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.models import ContractVersion

pytestmark = pytest.mark.django_db

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25,
)
avro_type_names = st.sampled_from(["null", "boolean", "int", "long", "float", "double", "bytes", "string",
                                   "record", "enum", "array", "map", "fixed", "nope"])
schema_like = st.fixed_dictionaries(
    {"type": avro_type_names, "name": st.text(max_size=6)},
    optional={"fields": st.lists(st.fixed_dictionaries({"name": st.text(max_size=6), "type": avro_type_names |
                                                        st.lists(avro_type_names, max_size=3)},
                                                       optional={"default": json_scalars}), max_size=4),
              "symbols": st.lists(st.text(max_size=4), max_size=3), "size": st.integers(-2, 5),
              "items": avro_type_names, "values": avro_type_names, "namespace": st.text(max_size=6)},
)
# Valid record schemas with hostile extras: huge integers, odd properties, deep custom metadata.
record_with_extras = st.builds(
    lambda name, extra, value: {"type": "record", "name": name or "R",
                                "fields": [{"name": "a", "type": ["null", "string"], "default": None}],
                                extra or "x": value},
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), st.text(max_size=8),
    st.integers(min_value=-(10**40), max_value=10**40) | json_values,
)
mapping_like = st.dictionaries(st.sampled_from(["events", "event_type", "fields", "event_id", "platform_metadata",
                                                "when", "x"]), json_values, max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(json_values, st.fixed_dictionaries({"schema": schema_like | record_with_extras | json_values},
                                                          optional={"mapping": mapping_like | json_values,
                                                                    "samples": json_values})))
def test_check_endpoint_answers_hostile_bodies_with_json_4xx_or_a_report(api_client_for, platform_user, chat_v1,
                                                                         body):
    client = api_client_for(platform_user)
    response = client.post(f"/api/v1/contracts/{chat_v1.contract.subject}/check", body, format="json")
    assert response.status_code in (200, 400, 413), response.content[:500]
    payload = response.json()
    if response.status_code == 200:
        assert isinstance(payload["compatible"], bool)
    else:
        assert payload["error"] and payload["message"]
    assert ContractVersion.objects.filter(contract=chat_v1.contract).count() == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=schema_like | record_with_extras, mapping=mapping_like)
def test_version_submission_with_hostile_input_saves_nothing_or_a_whole_version(api_client_for, platform_user,
                                                                                 chat_v1, schema, mapping):
    client = api_client_for(platform_user)
    before = ContractVersion.objects.filter(contract=chat_v1.contract).count()
    response = client.post(f"/api/v1/contracts/{chat_v1.contract.subject}/versions/",
                           {"schema": schema, "mapping": mapping}, format="json")
    assert response.status_code in (200, 201, 400, 409, 413), response.content[:500]
    after = ContractVersion.objects.filter(contract=chat_v1.contract).count()
    assert after == before + (1 if response.status_code == 201 else 0)
