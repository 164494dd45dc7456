"""Deletion tickets' fixtures: the test identity graph and file-backed erasure steps (tests.deletion.*)."""

from __future__ import annotations

import pytest

from portal.roles import Role


@pytest.fixture
def deletion_env(settings, tmp_path, monkeypatch):
    """Tickets expand through the test graph and erase through the platform steps plus two file stores."""
    monkeypatch.setenv("DELETION_TEST_DIR", str(tmp_path))
    settings.DELETION_EXPANDER = "tests.deletion.expanders.expand_identifiers"
    settings.DELETION_STEP_PROVIDERS = ["deletion.platform_stores.platform_steps",
                                        "tests.deletion.steps.recording_steps"]
    for name in ("files_a", "files_b"):
        (tmp_path / name).mkdir()
    return tmp_path


@pytest.fixture
def second_privacy_user(make_user):
    return make_user("privacy2", Role.PRIVACY)
