"""What an alert rule reports: the shared vocabulary of the alert engine and the rules that feed it.

A rule is a function ``rule(now: datetime) -> list[Condition]`` that looks at what the platform already
stores (shard leases, pipeline minutes, check results, model runs, deletion tickets) and returns the
conditions that hold *now*. The engine (quality.alerts) opens one alert per condition ``key`` while it
keeps being reported and resolves it the first evaluation it is not. A rule that cannot look (its store
is down) raises; the engine records that and leaves the rule's open alerts as they are, so an outage of
the store is never read as "everything recovered".

Kept free of Django so that rules' pure parts can be tested on plain data.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any


class Severity(enum.StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


@dataclasses.dataclass(frozen=True)
class Condition:
    """One condition that holds now.

    ``key`` identifies the alert across evaluations (``"<rule>:<subject>"``, e.g.
    ``"shard_lag:shardId-000000000001"``): the same key on the next evaluation keeps the same alert open.
    ``subject`` is what it is about, for people (a shard, a source, a table, a ticket).
    ``summary`` is one line a person reads in a notification; ``details`` the measured value, the
    threshold and anything else that explains it (JSON-serialisable; never personal data).
    ``runbook`` is the anchor of its section in docs/runbook.md (e.g. ``"shard-lag"``).
    ``link`` is the portal path where a person starts (e.g. ``"/pipeline/"``).
    """

    rule: str
    key: str
    subject: str
    severity: Severity
    summary: str
    runbook: str
    link: str = ""
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)


AlertRule = Callable[[datetime], list[Condition]]
