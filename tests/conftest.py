"""Shared fixtures: one user per role, the demo team, and an API client per role."""

from __future__ import annotations

import copy
import dataclasses
import os

import pytest

from portal.roles import Role

PASSWORD = "test-password-123"

# One archive object per landing unit unless a test asks for rolling (tests/ingest_workers/test_archive.py):
# most tests look at the checkpoint right after a unit. Worker processes the tests start inherit it.
os.environ.setdefault("RAW_ARCHIVE_ROLL_SECONDS", "0")
# The raw archive's local master key (deletion.subject_keys): a fixed test key, never the key file in var/.
os.environ.setdefault("ARCHIVE_LOCAL_MASTER_KEY", "dGVzdC1vbmx5LWFyY2hpdmUtbWFzdGVyLWtleS0zMiE=")


# Files that run the whole stack in subprocesses for one to three minutes. They are collected first, so under
# pytest-xdist (`make test`, a file at a time per worker) they start at once rather than leaving one worker
# alone on a long file at the end. A file missing from this list only runs later; nothing else depends on it.
LONG_RUNNING_FILES = (
    "tests/quality/test_demo_embedded.py",
    "tests/portal/test_embedded_default.py",
    "tests/ingest_workers/test_celery_workers.py",
    "tests/deletion/test_erasure_end_to_end.py",
    "tests/quality/test_demo_story.py",
    "tests/deletion/test_worker_resume.py",
)


def pytest_collection_modifyitems(config, items):
    def starts_late(item) -> bool:
        return not any(item.nodeid.startswith(path) for path in LONG_RUNNING_FILES)

    items.sort(key=starts_late)  # stable: the order within each group stays the collection order


def pytest_configure(config):
    from django.conf import settings

    settings.RAW_ARCHIVE_ROLL_SECONDS = float(os.environ["RAW_ARCHIVE_ROLL_SECONDS"])
    settings.ARCHIVE_LOCAL_MASTER_KEY = os.environ["ARCHIVE_LOCAL_MASTER_KEY"]


@pytest.fixture
def role_groups(db):
    from portal.services import role_groups_ensure

    return role_groups_ensure()


@pytest.fixture
def team(db):
    from portal.services import team_ensure

    return team_ensure(name="chat-platform", display_name="Chat platform")


@pytest.fixture
def other_team(db):
    from portal.services import team_ensure

    return team_ensure(name="voice-team", display_name="Voice team")


@pytest.fixture
def make_user(db, role_groups, django_user_model):
    def make(username: str, role: Role | None = None, teams=(), superuser: bool = False):
        user = django_user_model.objects.create_user(
            username=username, password=PASSWORD, email=f"{username}@example.com", is_superuser=superuser,
            is_staff=superuser,
        )
        if role is not None:
            user.groups.add(role_groups[role])
        for t in teams:
            t.members.add(user)
        return user

    return make


@pytest.fixture
def platform_user(make_user, team):
    return make_user("platform", Role.PLATFORM, teams=[team])


@pytest.fixture
def other_platform_user(make_user, other_team):
    return make_user("voiceperson", Role.PLATFORM, teams=[other_team])


@pytest.fixture
def engineer(make_user):
    return make_user("engineer", Role.DATA_ENGINEER)


@pytest.fixture
def second_engineer(make_user):
    return make_user("engineer2", Role.DATA_ENGINEER)


@pytest.fixture
def privacy_user(make_user):
    return make_user("privacy", Role.PRIVACY)


@pytest.fixture
def admin_user(make_user):
    return make_user("admin", Role.ADMIN, superuser=True)


@pytest.fixture
def api_client_for():
    """An API client authenticated with a real API token of `user`."""

    from rest_framework.test import APIClient

    from portal.services import api_token_create

    def make(user):
        _, token = api_token_create(user=user, name="test")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return client

    return make


@pytest.fixture
def web_chat_preset():
    from contracts.presets import preset_load

    return preset_load("web-chat")


@pytest.fixture
def web_chat_source(platform_user, team, web_chat_preset):
    from contracts.services import source_create

    source, _ = source_create(actor=platform_user, team=team, name="web-chat", platform=web_chat_preset["platform"],
                              kind=web_chat_preset["kind"], product=web_chat_preset.get("product", ""))
    return source


@pytest.fixture
def chat_contract(web_chat_source, web_chat_preset, platform_user, engineer):
    """web-chat's first preset contract with its first version approved (a schema, mapping and samples)."""
    from contracts.services import preset_versions_load

    spec = dict(web_chat_preset["contracts"][0])
    spec["versions"] = spec["versions"][:1]
    (version,) = preset_versions_load(actor=platform_user, reviewer=engineer, source=web_chat_source,
                                      contracts=[spec])
    return version.contract


@pytest.fixture
def chat_v1(chat_contract):
    return chat_contract.versions.get(version=1)


# --- the embedded warehouse: one fakesnow server subprocess for the whole test session -------------

@dataclasses.dataclass(frozen=True)
class WarehouseServer:
    host: str
    port: int
    path: str
    proc: object


@pytest.fixture(scope="session")
def warehouse_server(tmp_path_factory):
    from django.conf import settings

    from warehouse.embedded import embedded_server_start, embedded_server_stop, free_port

    path = tmp_path_factory.mktemp("warehouse")
    port = free_port()
    proc = embedded_server_start(path / "data", port, log_path=path / "server.log")
    saved = copy.deepcopy(settings.SNOWFLAKE)
    settings.SNOWFLAKE = {
        **settings.SNOWFLAKE, "account": "fakesnow", "user": "fake", "password": "snow",
        "host": "127.0.0.1", "port": port, "protocol": "http", "warehouse": "", "role": "",
    }
    try:
        yield WarehouseServer("127.0.0.1", port, str(path / "data"), proc)
    finally:
        # log the pooled sessions out while the server still answers (not at exit, into closed logs)
        from ingest_workers import services
        from warehouse.connection import pool_close

        pool_close()
        services.landing_clients_close()
        services.merge_connections_close()
        settings.SNOWFLAKE = saved
        embedded_server_stop(proc)
