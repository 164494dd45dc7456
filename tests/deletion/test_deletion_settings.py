"""The deletion settings: the SLA per regulation defaults to 72 hours, and an unusable one stops start-up
naming its variable."""

from __future__ import annotations

import json

from tests.portal.test_settings import manage, settings_probe


def test_the_sla_is_72_hours_per_regulation_unless_set():
    result = settings_probe("print(json.dumps(__import__('django.conf').conf.settings.DELETION_SLA_HOURS))",
                            DELETION_SLA_HOURS_CCPA="96")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"gdpr": 72.0, "ccpa": 96.0}


def test_an_sla_of_zero_hours_is_refused_by_name():
    result = manage("check", DELETION_SLA_HOURS_GDPR="0")
    assert result.returncode != 0
    assert "DELETION_SLA_HOURS_GDPR must be a number of hours above 0" in result.stderr
