"""Scorecards: a grade per source, per contract version and for the platform, with the reasons that lowered it
and since when (pure: plain facts in, grades out; no Django, no clock: ``now`` is passed).

A grade is a level (green, amber, red; "unknown" when there is nothing to grade) and a score out of 100. Each
reason costs points by severity (critical 40, warning 15) and the worst severity sets the level, so one
critical reason is red whatever the score. The facts come from ``quality.selectors.scorecard_facts``: check
results of the latest run per table, the quarantine of the evaluation window (reason codes and JSON paths),
the per-minute pipeline sample and the anomaly verdicts of ``quality.anomaly``.

A reason has a stable ``key`` (code + what it is about, e.g. ``quarantine:schema_violation:/message/text``);
``reasons_since`` carries the ``since`` of the same key from the previous snapshot so "since when" survives
evaluations, and a new key starts now (or at the first quarantined record behind it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "Thresholds",
    "Reason",
    "Grade",
    "CheckFact",
    "QuarantineFact",
    "SubjectFacts",
    "VolumeRecent",
    "grade_from",
    "reasons_since",
    "source_grade",
    "contract_grade",
    "platform_grade",
    "PENALTY",
]

CRITICAL, WARNING = "critical", "warning"
PENALTY = {CRITICAL: 40, WARNING: 15}
LEVEL_BY_SEVERITY = {CRITICAL: "red", WARNING: "amber"}
LEVEL_RANK = {"red": 0, "amber": 1, "unknown": 2, "green": 3}


@dataclasses.dataclass(frozen=True)
class Thresholds:
    quarantine_amber: float = 0.01     # share of records quarantined in the window
    quarantine_red: float = 0.05
    lag_amber_s: float = 60.0          # largest shard lag
    lag_red_s: float = 180.0           # the 3-minute landing target
    silent_minutes: float = 15.0       # a source that sent in the last day and nothing for this long
    volume_drop: float = 0.5           # records per minute of the last minutes this far under the hour before's
    volume_min_per_minute: float = 1.0  # ... when the hour before had at least this many (a trickle is not judged)


@dataclasses.dataclass(frozen=True)
class Reason:
    key: str
    code: str
    severity: str
    summary: str
    since: dt.datetime | None = None
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "code": self.code, "severity": self.severity, "summary": self.summary,
                "since": self.since.isoformat() if self.since else None, "details": dict(self.details)}


@dataclasses.dataclass(frozen=True)
class Grade:
    level: str
    score: int
    reasons: tuple[Reason, ...]


@dataclasses.dataclass(frozen=True)
class CheckFact:
    """A check of the latest run that did not pass. ``source_ids``: the sources of its failed-row sample
    (which sources it is about); ``contracts``: "<subject> v<version>" of those rows, when known."""

    table: str
    check_key: str
    check_name: str
    outcome: str                       # failed | warned | error
    measured: float | None
    threshold: str
    checked_at: dt.datetime
    result_id: int = 0
    column: str = ""
    source_ids: frozenset[str] = frozenset()
    contracts: frozenset[str] = frozenset()
    error: str = ""


@dataclasses.dataclass(frozen=True)
class QuarantineFact:
    """Quarantined records of the window with one reason, path and contract version."""

    reason_code: str
    error_path: str
    count: int
    first_at: dt.datetime | None
    contract: str = ""                 # "<subject> v<version>" or ""
    detail: str = ""                   # one reason detail, for people (never a payload value)


@dataclasses.dataclass(frozen=True)
class VolumeRecent:
    """A source's volume in its last complete minutes against the hour before them (the per-minute sample): what
    shows a drop before any weekly baseline exists (a fresh install, a new source)."""

    per_minute: float                  # records per minute in the last ``minutes`` complete minutes
    before_per_minute: float           # records per minute in the hour before them (since the source's first)
    minutes: int
    before_minutes: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SubjectFacts:
    """What is graded for one source, one contract version, or the platform (``name`` "platform")."""

    name: str
    window_start: dt.datetime
    window_end: dt.datetime
    records: int = 0                   # records read in the window (valid + quarantined)
    quarantined: int = 0
    quarantine: tuple[QuarantineFact, ...] = ()
    checks: tuple[CheckFact, ...] = ()
    last_seen_at: dt.datetime | None = None   # last record read (within the last day), None if none
    lag_s: float | None = None                # platform: the largest shard lag read lately
    anomalies: tuple[Mapping[str, Any], ...] = ()  # anomaly.Verdict.as_dict() of the last complete hour
    #: a source's records per minute lately and in the hour before (``VolumeRecent``), None when not judged
    volume_recent: VolumeRecent | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "window_start": self.window_start.isoformat(),
                "window_end": self.window_end.isoformat(), "records": self.records,
                "quarantined": self.quarantined,
                "quarantine_rate": round(self.quarantined / self.records, 4) if self.records else None,
                "last_seen_at": self.last_seen_at.isoformat() if self.last_seen_at else None,
                "lag_s": self.lag_s, "anomalies": [dict(a) for a in self.anomalies],
                "volume_recent": self.volume_recent.as_dict() if self.volume_recent else None,
                "check_result_ids": [c.result_id for c in self.checks if c.result_id]}


def grade_from(reasons: Iterable[Reason], *, has_data: bool = True) -> Grade:
    """Level and score from the reasons (worst first in the result)."""
    ordered = tuple(sorted(reasons, key=lambda r: r.severity != CRITICAL))  # stable: the given order within
    score = max(0, 100 - sum(PENALTY.get(r.severity, 0) for r in ordered))
    if ordered:
        level = "red" if any(r.severity == CRITICAL for r in ordered) else "amber"
    else:
        level = "green" if has_data else "unknown"
    return Grade(level, score, ordered)


def reasons_since(reasons: Iterable[Reason], previous: Mapping[str, dt.datetime | None], now: dt.datetime
                  ) -> list[Reason]:
    """Each reason's ``since``: the previous snapshot's for a key it already had, else its own (the first
    record behind it) or ``now``."""
    out = []
    for reason in reasons:
        since = previous.get(reason.key) or reason.since or now
        out.append(dataclasses.replace(reason, since=since))
    return out


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _quarantine_reasons(facts: SubjectFacts, t: Thresholds) -> list[Reason]:
    if not facts.records or not facts.quarantined:
        return []
    rate = facts.quarantined / facts.records
    if rate < t.quarantine_amber:
        return []
    severity = CRITICAL if rate >= t.quarantine_red else WARNING
    out = []
    for q in sorted(facts.quarantine, key=lambda q: (-q.count, q.reason_code, q.error_path))[:5]:
        where = f" at {q.error_path}" if q.error_path else ""
        contract = f" ({q.contract})" if q.contract else ""
        out.append(Reason(
            key=f"quarantine:{q.reason_code}:{q.error_path}", code="quarantine_rate", severity=severity,
            summary=f"{q.count} of {facts.records} records quarantined for {q.reason_code}{where}{contract}"
                    f" ({_pct(rate)} of the window in all)",
            since=q.first_at,
            details={"reason_code": q.reason_code, "path": q.error_path, "count": q.count, "contract": q.contract,
                     "rate": round(rate, 4), "records": facts.records, "detail": q.detail[:300],
                     "threshold": f"amber ≥ {_pct(t.quarantine_amber)}, red ≥ {_pct(t.quarantine_red)}"}))
    if not out:  # counted but no rows read back (the warehouse lags the per-minute sample)
        out.append(Reason(key="quarantine:", code="quarantine_rate", severity=severity,
                          summary=f"{facts.quarantined} of {facts.records} records quarantined ({_pct(rate)})",
                          details={"rate": round(rate, 4), "records": facts.records}))
    return out


def _check_reasons(checks: Sequence[CheckFact], *, errors_too: bool) -> list[Reason]:
    out = []
    for c in checks:
        if c.outcome == "error" and not errors_too:
            continue
        severity = CRITICAL if c.outcome == "failed" else WARNING
        if c.outcome == "error":
            summary = f"{c.check_name} on {c.table} could not run: {c.error[:200]}"
        else:
            measured = "" if c.measured is None else f": measured {c.measured:g}"
            summary = f"{c.check_name} on {c.table} {c.outcome}{measured} ({c.threshold})"
        out.append(Reason(key=f"check:{c.table}:{c.check_key}", code=f"check_{c.outcome}", severity=severity,
                          summary=summary, since=None,
                          details={"table": c.table, "check_key": c.check_key, "path": c.column,
                                   "measured": c.measured, "threshold": c.threshold, "result_id": c.result_id,
                                   "contracts": sorted(c.contracts)}))
    return out


def _anomaly_reasons(facts: SubjectFacts) -> list[Reason]:
    out = []
    for a in facts.anomalies:
        if not a.get("anomalous"):
            continue
        metric = a["metric"]
        if metric == "quarantine_rate":
            text = (f"quarantine rate {_pct(a['value'])} in the last hour against a usual {_pct(a['median'])} "
                    f"at this hour of the week")
        elif metric == "volume":
            text = (f"volume {a['value']:g} in the last hour, {a['change'] * 100:+.0f}% against a usual "
                    f"{a['median']:g} at this hour of the week")
        else:
            text = f"latency {a['value'] / 1000:.1f} s in the last hour against a usual {a['median'] / 1000:.1f} s"
        out.append(Reason(key=f"anomaly:{metric}", code=f"{metric}_anomaly", severity=WARNING, summary=text,
                          details=dict(a)))
    return out


def _silence_reason(facts: SubjectFacts, t: Thresholds, now: dt.datetime) -> list[Reason]:
    if facts.last_seen_at is None:
        return []
    quiet = (now - facts.last_seen_at).total_seconds() / 60
    if quiet < t.silent_minutes:
        return []
    return [Reason(key="silent", code="silent", severity=WARNING,
                   summary=f"no records for {quiet:.0f} minutes (sent earlier today)", since=facts.last_seen_at,
                   details={"last_seen_at": facts.last_seen_at.isoformat(), "threshold_minutes": t.silent_minutes})]


def _volume_drop_reason(facts: SubjectFacts, t: Thresholds) -> list[Reason]:
    """A source whose last minutes' volume fell under ``1 - volume_drop`` of the hour before's. The weekly
    anomaly verdict, once there is history, is the better judge: then it speaks instead."""
    v = facts.volume_recent
    if v is None or any(a.get("metric") == "volume" for a in facts.anomalies):
        return []
    if v.before_per_minute < t.volume_min_per_minute or v.per_minute >= (1 - t.volume_drop) * v.before_per_minute:
        return []
    change = v.per_minute / v.before_per_minute - 1
    return [Reason(key="volume_drop", code="volume_drop", severity=WARNING,
                   summary=(f"volume down {-change * 100:.0f}%: {v.per_minute:.1f} records/min in the last "
                            f"{v.minutes} min against {v.before_per_minute:.1f}/min in the {v.before_minutes} min "
                            "before"),
                   details={**v.as_dict(), "change": round(change, 3),
                            "threshold": f"under {(1 - t.volume_drop) * 100:.0f}% of the minutes before"})]


def source_grade(facts: SubjectFacts, *, now: dt.datetime, thresholds: Thresholds = Thresholds()) -> Grade:
    """A source: its quarantine rate in the window (each reason and path), failed checks whose failing rows
    are its own, volume/quarantine anomalies of its last complete hour, a drop of its last minutes' volume
    against the hour before, and silence after traffic."""
    silent = _silence_reason(facts, thresholds, now)
    reasons = [*_quarantine_reasons(facts, thresholds), *_check_reasons(facts.checks, errors_too=False),
               *_anomaly_reasons(facts), *([] if silent else _volume_drop_reason(facts, thresholds)), *silent]
    return grade_from(reasons, has_data=bool(facts.records or facts.last_seen_at or facts.checks))


def contract_grade(facts: SubjectFacts, *, now: dt.datetime, thresholds: Thresholds = Thresholds()) -> Grade:
    """A contract version: the records routed to it in the window and the failed checks on its rows."""
    reasons = [*_quarantine_reasons(facts, thresholds), *_check_reasons(facts.checks, errors_too=False)]
    return grade_from(reasons, has_data=bool(facts.records or facts.checks))


def platform_grade(facts: SubjectFacts, *, now: dt.datetime, thresholds: Thresholds = Thresholds()) -> Grade:
    """The platform: every check that did not pass (a check that could not run too: unknown is not fine),
    the overall quarantine rate, and the shard lag."""
    reasons = [*_check_reasons(facts.checks, errors_too=True), *_anomaly_reasons(facts)]
    if facts.records and facts.quarantined / facts.records >= thresholds.quarantine_amber:
        rate = facts.quarantined / facts.records
        reasons.append(Reason(
            key="quarantine:platform", code="quarantine_rate",
            severity=CRITICAL if rate >= thresholds.quarantine_red else WARNING,
            summary=f"{facts.quarantined} of {facts.records} records quarantined in the window ({_pct(rate)})",
            details={"rate": round(rate, 4), "records": facts.records}))
    if facts.lag_s is not None and facts.lag_s >= thresholds.lag_amber_s:
        reasons.append(Reason(
            key="lag", code="shard_lag", severity=CRITICAL if facts.lag_s >= thresholds.lag_red_s else WARNING,
            summary=f"the stream readers are {facts.lag_s:.0f} s behind (target under {thresholds.lag_red_s:.0f} s)",
            details={"lag_s": facts.lag_s, "threshold": f"amber ≥ {thresholds.lag_amber_s:.0f} s, "
                                                        f"red ≥ {thresholds.lag_red_s:.0f} s"}))
    return grade_from(reasons, has_data=bool(facts.records or facts.checks or facts.lag_s is not None))
