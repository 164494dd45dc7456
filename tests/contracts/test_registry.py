"""The Schema-Registry-compatible subset, driven by confluent_kafka's own SchemaRegistryClient."""

from __future__ import annotations

import copy

import orjson
import pytest
import requests
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from contracts.models import Contract, ContractVersion, VersionStatus
from portal.services import api_token_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def registry_url(live_server):
    return f"{live_server.url}/registry"


@pytest.fixture
def client_for(registry_url):
    def make(user):
        _, token = api_token_create(user=user, name="registry")
        return SchemaRegistryClient({"url": registry_url, "basic.auth.user.info": f"{user.username}:{token}"})

    return make


def avro(schema: dict) -> Schema:
    return Schema(orjson.dumps(schema).decode(), "AVRO")


def v1_schema(version: ContractVersion) -> dict:
    return orjson.loads(version.schema.schema)


@pytest.fixture
def http(registry_url):
    """Plain HTTP as `user` (for what the Python client does not show: headers, bodies, content types)."""
    def make(user):
        _, token = api_token_create(user=user, name="http")
        session = requests.Session()
        session.auth = (user.username, token)
        session.base = registry_url
        return session

    return make


NAMEABLE_PRIMITIVES = ("boolean", "int", "long", "float", "double", "bytes", "string")


def written_otherwise(schema):
    """The same schema written differently: attributes in reverse order, primitives as named objects."""
    if isinstance(schema, list):
        return [written_otherwise(branch) for branch in schema]
    if isinstance(schema, str):
        return {"type": schema, "name": "n"} if schema in NAMEABLE_PRIMITIVES else schema
    rewritten = {key: schema[key] for key in reversed(list(schema))}
    for key in ("items", "values"):
        if key in rewritten:
            rewritten[key] = written_otherwise(rewritten[key])
    if "fields" in rewritten:
        rewritten["fields"] = [{**{key: field[key] for key in reversed(list(field))},
                                "type": written_otherwise(field["type"])} for field in rewritten["fields"]]
    return rewritten


def evolved(schema: dict, *, optional: str | None = None, required: str | None = None) -> dict:
    new = copy.deepcopy(schema)
    if optional:
        new["fields"].append({"name": optional, "type": ["null", "string"], "default": None})
    if required:
        new["fields"].append({"name": required, "type": "long"})
    return new


def test_reads_subjects_versions_and_schemas(client_for, engineer, chat_v1):
    sr = client_for(engineer)
    subject = chat_v1.contract.subject
    assert subject in sr.get_subjects()
    assert sr.get_versions(subject) == [1]
    latest = sr.get_latest_version(subject)
    assert latest.version == 1 and latest.schema_id == chat_v1.schema_id
    assert orjson.loads(latest.schema.schema_str) == v1_schema(chat_v1)
    assert sr.get_version(subject, 1).schema_id == chat_v1.schema_id
    assert orjson.loads(sr.get_schema(chat_v1.schema_id).schema_str) == v1_schema(chat_v1)
    assert sr.get_compatibility(subject) == "BACKWARD_TRANSITIVE"


def test_register_creates_a_version_in_review_and_is_idempotent(client_for, platform_user, chat_v1):
    sr = client_for(platform_user)
    subject = chat_v1.contract.subject
    schema = evolved(v1_schema(chat_v1), optional="campaign")
    schema_id = sr.register_schema(subject, avro(schema))
    version = ContractVersion.objects.get(contract=chat_v1.contract, version=2)
    assert version.status == VersionStatus.IN_REVIEW and version.schema_id == schema_id
    assert version.mapping == chat_v1.mapping  # carried forward for the reviewer
    fresh = client_for(platform_user)  # no client-side cache
    assert fresh.register_schema(subject, avro(schema)) == schema_id
    assert ContractVersion.objects.filter(contract=chat_v1.contract).count() == 2
    assert fresh.get_versions(subject) == [1, 2]
    assert fresh.lookup_schema(subject, avro(schema)).version == 2


def test_incompatible_registration_is_409_with_error_code_409(client_for, platform_user, chat_v1):
    sr = client_for(platform_user)
    with pytest.raises(SchemaRegistryError) as err:
        sr.register_schema(chat_v1.contract.subject, avro(evolved(v1_schema(chat_v1), required="seats")))
    assert err.value.http_status_code == 409 and err.value.error_code == 409  # Confluent's code, not 40901
    assert "seats" in err.value.error_message
    assert ContractVersion.objects.filter(contract=chat_v1.contract).count() == 1


def test_invalid_schema_is_422_42201(client_for, platform_user, chat_v1):
    sr = client_for(platform_user)
    with pytest.raises(SchemaRegistryError) as err:
        sr.register_schema(chat_v1.contract.subject, Schema('{"type": "record", "name": "X", "fields": '
                                                            '[{"name": "a", "type": "nope"}]}', "AVRO"))
    assert err.value.http_status_code == 422 and err.value.error_code == 42201


def test_compatibility_checks_against_latest_and_a_number(client_for, registry_url, platform_user, chat_v1):
    sr = client_for(platform_user)
    subject = chat_v1.contract.subject
    assert sr.test_compatibility(subject, avro(evolved(v1_schema(chat_v1), optional="x")), verbose=True) is True
    assert sr.test_compatibility(subject, avro(evolved(v1_schema(chat_v1), required="y")), version=1) is False
    _, token = api_token_create(user=platform_user)
    response = requests.post(
        f"{registry_url}/compatibility/subjects/{subject}/versions/latest?verbose=true",
        json={"schema": orjson.dumps(evolved(v1_schema(chat_v1), required="y")).decode()},
        auth=("platform", token), timeout=10)
    body = response.json()
    assert body["is_compatible"] is False and any("/fields/y" in m for m in body["messages"])


def test_compatibility_level_get_and_set(client_for, platform_user, chat_v1):
    sr = client_for(platform_user)
    subject = chat_v1.contract.subject
    assert sr.set_compatibility(subject, "FULL_TRANSITIVE") == {"compatibility": "FULL_TRANSITIVE"}
    assert sr.get_compatibility(subject) == "FULL_TRANSITIVE"
    assert Contract.objects.get(subject=subject).compatibility == "FULL_TRANSITIVE"
    with pytest.raises(SchemaRegistryError) as err:
        sr.set_compatibility(subject, "SIDEWAYS")
    assert err.value.error_code == 42203


def test_not_found_codes(client_for, engineer, chat_v1):
    sr = client_for(engineer)
    with pytest.raises(SchemaRegistryError) as err:
        sr.get_versions("nope.missing")
    assert (err.value.http_status_code, err.value.error_code) == (404, 40401)
    with pytest.raises(SchemaRegistryError) as err:
        sr.get_version(chat_v1.contract.subject, 42)
    assert (err.value.http_status_code, err.value.error_code) == (404, 40402)
    with pytest.raises(SchemaRegistryError) as err:
        sr.get_schema(999999)
    assert (err.value.http_status_code, err.value.error_code) == (404, 40403)


def test_invalid_version_is_42202(registry_url, engineer, chat_v1):
    _, token = api_token_create(user=engineer)
    response = requests.get(f"{registry_url}/subjects/{chat_v1.contract.subject}/versions/zero",
                            auth=("engineer", token), timeout=10)
    assert response.status_code == 422 and response.json()["error_code"] == 42202
    assert response.headers["Content-Type"].startswith("application/vnd.schemaregistry.v1+json")


def test_wrong_credentials_are_401(registry_url, engineer, chat_v1):
    sr = SchemaRegistryClient({"url": registry_url, "basic.auth.user.info": "engineer:co_bad_token"})
    with pytest.raises(SchemaRegistryError) as err:
        sr.get_subjects()
    assert err.value.http_status_code == 401 and err.value.error_code == 40101
    _, token = api_token_create(user=engineer)
    wrong_user = SchemaRegistryClient({"url": registry_url, "basic.auth.user.info": f"platform:{token}"})
    with pytest.raises(SchemaRegistryError):
        wrong_user.get_subjects()


def test_another_teams_member_cannot_register(client_for, other_platform_user, chat_v1):
    sr = client_for(other_platform_user)
    with pytest.raises(SchemaRegistryError) as err:
        sr.register_schema(chat_v1.contract.subject, avro(evolved(v1_schema(chat_v1), optional="z")))
    assert err.value.http_status_code == 403 and err.value.error_code == 40301
    assert ContractVersion.objects.filter(contract=chat_v1.contract).count() == 1


def test_registering_to_a_new_subject_of_your_source_creates_the_contract(client_for, platform_user, chat_v1):
    sr = client_for(platform_user)
    schema = {"type": "record", "name": "PageView", "namespace": "com.chatorbit.web",
              "fields": [{"name": "url", "type": "string"}, {"name": "ts", "type": "long"}]}
    schema_id = sr.register_schema("web-chat.page_view", avro(schema))
    contract = Contract.objects.get(subject="web-chat.page_view")
    assert contract.source.name == "web-chat"
    version = contract.versions.get()
    assert version.schema_id == schema_id and version.status == VersionStatus.IN_REVIEW
    with pytest.raises(SchemaRegistryError) as err:
        sr.register_schema("no-such-source.page_view", avro(schema))
    assert err.value.error_code == 40401


def test_a_refused_registration_leaves_no_empty_subject(client_for, platform_user, chat_v1):
    sr = client_for(platform_user)
    with pytest.raises(SchemaRegistryError) as err:
        sr.register_schema("web-chat.half_saved", Schema('{"type": "string"}', "AVRO"))
    assert err.value.error_code == 42201
    assert "web-chat.half_saved" not in sr.get_subjects()
    assert not Contract.objects.filter(subject="web-chat.half_saved").exists()


def test_registration_is_checked_against_versions_still_in_review(client_for, platform_user, chat_v1):
    sr = client_for(platform_user)
    subject = chat_v1.contract.subject
    sr.register_schema(subject, avro(evolved(v1_schema(chat_v1), optional="campaign")))   # v2, in review
    clash = evolved(v1_schema(chat_v1))
    clash["fields"].append({"name": "campaign", "type": ["null", "long"], "default": None})  # v2 says string
    assert sr.test_compatibility_all_versions(subject, avro(clash)) is False
    with pytest.raises(SchemaRegistryError) as err:
        sr.register_schema(subject, avro(clash))
    assert err.value.error_code == 409


def test_a_rejected_schema_can_be_proposed_again_as_a_new_version(client_for, platform_user, engineer, chat_v1):
    from contracts.services import contract_version_reject

    sr = client_for(platform_user)
    subject = chat_v1.contract.subject
    schema = evolved(v1_schema(chat_v1), optional="campaign")
    sr.register_schema(subject, avro(schema))
    contract_version_reject(actor=engineer, version=ContractVersion.objects.get(contract=chat_v1.contract,
                                                                                 version=2), comment="not yet")
    again = client_for(platform_user).register_schema(subject, avro(schema))
    assert again == chat_v1.contract.versions.get(version=3).schema_id
    assert client_for(platform_user).get_versions(subject) == [1, 3]


def test_teams_may_tighten_but_not_loosen_the_level(client_for, platform_user, engineer, chat_v1):
    subject = chat_v1.contract.subject
    with pytest.raises(SchemaRegistryError) as err:
        client_for(platform_user).set_compatibility(subject, "NONE")
    assert err.value.http_status_code == 403 and err.value.error_code == 40301
    assert client_for(engineer).set_compatibility(subject, "NONE") == {"compatibility": "NONE"}


def test_unknown_registry_paths_and_deep_bodies_get_registry_errors(registry_url, engineer, chat_v1):
    _, token = api_token_create(user=engineer)
    missing = requests.get(f"{registry_url}/schemas/ids/1/versions", auth=("engineer", token), timeout=10)
    assert missing.status_code == 404 and missing.json()["error_code"] == 404
    deep = requests.post(f"{registry_url}/subjects/{chat_v1.contract.subject}/versions", auth=("engineer", token),
                         data="[" * 5000 + "]" * 5000, timeout=10,
                         headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    assert deep.status_code == 400 and "nested too deeply" in deep.json()["message"]


def test_avro_answers_carry_no_schema_type(http, engineer, chat_v1):
    session = http(engineer)
    subject = chat_v1.contract.subject
    bodies = [
        session.get(f"{session.base}/subjects/{subject}/versions/1", timeout=10).json(),
        session.get(f"{session.base}/subjects/{subject}/versions/latest", timeout=10).json(),
        session.get(f"{session.base}/schemas/ids/{chat_v1.schema_id}", timeout=10).json(),
        session.post(f"{session.base}/subjects/{subject}", timeout=10,
                     json={"schema": chat_v1.schema.schema}).json(),
    ]
    assert all("schema" in body and "schemaType" not in body for body in bodies), bodies


def test_the_same_schema_written_differently_is_found_and_not_registered_again(client_for, platform_user,
                                                                               chat_v1):
    schema = v1_schema(chat_v1)
    rewritten = written_otherwise(schema)
    assert orjson.dumps(rewritten, option=orjson.OPT_SORT_KEYS) != orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    assert '"name":"n"' in orjson.dumps(rewritten).decode()  # it does contain a named primitive
    subject = chat_v1.contract.subject
    found = client_for(platform_user).lookup_schema(subject, avro(rewritten))
    assert (found.version, found.schema_id) == (1, chat_v1.schema_id)
    assert client_for(platform_user).register_schema(subject, avro(rewritten)) == chat_v1.schema_id
    assert ContractVersion.objects.filter(contract=chat_v1.contract).count() == 1
    # Under another subject it is still the same schema, so it gets the same global id.
    assert client_for(platform_user).register_schema("web-chat.copy", avro(rewritten)) == chat_v1.schema_id
    # What a reader sees still counts (this is not Avro's Parsing Canonical Form): a different default
    # is a different schema.
    other_default = copy.deepcopy(rewritten)
    other_default["fields"].append({"name": "campaign", "type": ["string", "null"], "default": "none"})
    client_for(platform_user).register_schema(subject, avro(other_default))
    other_default["fields"][-1]["default"] = "unknown"
    with pytest.raises(SchemaRegistryError) as err:
        client_for(platform_user).lookup_schema(subject, avro(other_default))
    assert err.value.error_code == 40403


def test_the_level_can_be_set_before_the_first_version(client_for, platform_user, other_platform_user, chat_v1):
    sr = client_for(platform_user)
    assert sr.set_compatibility("web-chat.page_view", "FULL_TRANSITIVE") == {"compatibility": "FULL_TRANSITIVE"}
    assert Contract.objects.get(subject="web-chat.page_view").compatibility == "FULL_TRANSITIVE"
    assert client_for(platform_user).get_compatibility("web-chat.page_view") == "FULL_TRANSITIVE"
    # The team rules still hold, and a refused change leaves no subject behind.
    with pytest.raises(SchemaRegistryError) as err:
        sr.set_compatibility("web-chat.loose", "NONE")
    assert err.value.http_status_code == 403
    with pytest.raises(SchemaRegistryError) as err:
        client_for(other_platform_user).set_compatibility("web-chat.not_yours", "FULL")
    assert err.value.http_status_code == 403
    with pytest.raises(SchemaRegistryError) as err:
        sr.set_compatibility("web-chat.typo", "SIDEWAYS")
    assert err.value.error_code == 42203
    assert not Contract.objects.filter(subject__in=["web-chat.loose", "web-chat.not_yours", "web-chat.typo"]).exists()


def test_answers_in_every_media_type_confluent_accepts(http, engineer, chat_v1):
    session = http(engineer)
    answered = {}
    for accept in ["application/vnd.schemaregistry.v1+json", "application/vnd.schemaregistry+json",
                   "application/json", "*/*", "application/*", None]:  # None: no Accept header at all
        response = session.get(f"{session.base}/subjects/{chat_v1.contract.subject}/versions",
                               headers={"Accept": accept}, timeout=10)
        assert response.status_code == 200 and response.json() == [1], (accept, response.text)
        answered[accept] = response.headers["Content-Type"].split(";")[0]
    assert answered == {
        "application/vnd.schemaregistry.v1+json": "application/vnd.schemaregistry.v1+json",
        "application/vnd.schemaregistry+json": "application/vnd.schemaregistry+json",
        "application/json": "application/json",
        "*/*": "application/vnd.schemaregistry.v1+json",
        "application/*": "application/vnd.schemaregistry.v1+json",
        None: "application/vnd.schemaregistry.v1+json",
    }


def test_an_octet_stream_body_is_read_as_json(http, platform_user, chat_v1):
    session = http(platform_user)
    body = orjson.dumps({"schema": chat_v1.schema.schema})
    response = session.post(f"{session.base}/subjects/{chat_v1.contract.subject}", data=body, timeout=10,
                            headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 200 and response.json()["version"] == 1


def test_the_root_answers_as_confluents_does(registry_url):
    response = requests.get(f"{registry_url}/", timeout=10)
    assert response.status_code == 200 and response.json() == {}


def test_clients_can_ask_for_approved_versions_only(client_for, http, platform_user, chat_v1):
    subject = chat_v1.contract.subject
    client_for(platform_user).register_schema(subject, avro(evolved(v1_schema(chat_v1), optional="campaign")))
    session = http(platform_user)
    versions = f"{session.base}/subjects/{subject}/versions"
    assert session.get(versions, timeout=10).json() == [1, 2]  # the default keeps Confluent's shape
    assert session.get(f"{versions}/latest", timeout=10).json()["version"] == 2  # in review
    assert session.get(versions, params={"approved": "true"}, timeout=10).json() == [1]
    latest = session.get(f"{versions}/latest", params={"approved": "true"}, timeout=10).json()
    assert (latest["version"], latest["id"]) == (1, chat_v1.schema_id)
    bare = session.get(f"{versions}/latest/schema", params={"approved": "true"}, timeout=10).json()
    assert bare == v1_schema(chat_v1)
    in_review = session.get(f"{versions}/2", params={"approved": "true"}, timeout=10)
    assert in_review.status_code == 404 and in_review.json()["error_code"] == 40402
    assert "in review, not approved" in in_review.json()["message"]
    typo = session.get(versions, params={"approved": "yes"}, timeout=10)
    assert typo.status_code == 400 and "'approved' must be true or false" in typo.json()["message"]
