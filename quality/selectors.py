"""Reads for the quality pages and commands: the generated contracts (from the registry as it is now)
and the stored runs, with failed-row samples cut down to what the viewer may see."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import orjson
from django.conf import settings

from quality.models import CheckResult, QualityRun, ScorecardSnapshot, SourceHour
from quality.soda_contracts import (
    QUALITY_TABLES,
    ContractRef,
    GeneratedContract,
    GenerationSettings,
    TeamCheckSet,
    quality_table,
    soda_contract,
    table_label,
)
from quality.soda_run import OUTCOMES

__all__ = [
    "generation_settings",
    "contract_generated",
    "table_labels",
    "table_overview",
    "table_detail",
    "SampleScope",
    "sample_scope",
]


def generation_settings(*, database: str | None = None) -> GenerationSettings:
    """What the contracts are generated from: settings and the registry's versions in force."""
    from contracts.selectors import contract_versions_in_force

    refs = tuple(sorted(ContractRef(subject=v["subject"], version=v["version"], status=v["status"],
                                    source_id=v["source_id"], source=v["source"])
                        for v in contract_versions_in_force()))
    return GenerationSettings(
        database=database or settings.SNOWFLAKE["database"], contract_versions=refs, team_checks=team_check_sets(),
        canonical_freshness_minutes=settings.QUALITY_CANONICAL_FRESHNESS_MINUTES,
        curated_freshness_hours=settings.QUALITY_CURATED_FRESHNESS_HOURS,
    )


def team_check_sets() -> tuple[TeamCheckSet, ...]:
    """Every approved version's team checks, validated again (the canonical model may have changed since
    approval: checks that no longer validate are left out, and the contract's header says why)."""
    from contracts.selectors import team_checks_in_force
    from contracts.team_checks import TeamChecksError, version_team_checks

    sets = []
    for row in team_checks_in_force():
        try:
            checks = tuple(version_team_checks(row["team_checks"], row["mapping"]))
            problem = ""
        except TeamChecksError as err:
            checks, problem = (), str(err)
        sets.append(TeamCheckSet(subject=row["subject"], version=row["version"], source_id=row["source_id"],
                                 checks=checks, problem=problem))
    return tuple(sets)


def contract_generated(table: str, *, database: str | None = None) -> GeneratedContract:
    """The Soda contract of ``table`` (``CANONICAL.EVENTS``, ``ANALYTICS.USER_FEEDBACK`` …) as the
    registry stands now. ValueError for a table no checks cover."""
    return soda_contract(quality_table(table), generation_settings(database=database))


def table_labels() -> list[str]:
    return [table_label(t) for t in QUALITY_TABLES]


def _worst(results: list[CheckResult]) -> CheckResult | None:
    rank = {o: i for i, o in enumerate(OUTCOMES)}
    return min(results, key=lambda r: (rank.get(r.outcome, 0), r.id)) if results else None


def table_overview() -> list[dict]:
    """Per covered table: its latest finished run (counts, worst check, when) and any run waiting."""
    rows = []
    for label in table_labels():
        runs = QualityRun.objects.filter(table=label)
        latest = runs.filter(status__in=(QualityRun.Status.DONE, QualityRun.Status.ERROR)).order_by(
            "-finished_at", "-id").first()
        pending = runs.filter(status__in=(QualityRun.Status.QUEUED, QualityRun.Status.RUNNING)).order_by(
            "-queued_at").select_related("requested_by").first()
        worst = None
        if latest is not None:
            worst = _worst(list(latest.results.exclude(outcome=CheckResult.Outcome.PASSED)))
        rows.append({"table": label, "latest": latest, "pending": pending, "worst": worst})
    return rows


@dataclasses.dataclass(frozen=True)
class SampleScope:
    """Whose failed rows a viewer may see: every row, or the rows of some sources."""

    everything: bool
    source_ids: frozenset[str] = frozenset()
    source_names: frozenset[str] = frozenset()

    def allows(self, source_id: Any) -> bool:
        return self.everything or (source_id is not None and str(source_id) in self.source_ids | self.source_names)


def sample_scope(user: Any) -> SampleScope:
    """Data engineers and admins see every sample; a team member the rows of their own sources; others none."""
    from ingest_workers.page_selectors import quarantine_scope

    scope = quarantine_scope(user)  # the quarantine's rule: same people, same sources
    if scope is None:
        return SampleScope(False)
    return SampleScope(scope.everything, frozenset(scope.source_ids), frozenset(scope.source_names))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def table_detail(label: str, *, user: Any) -> dict:
    """A table's latest finished run with each check (worst first), samples cut to the viewer's scope."""
    table = quality_table(label)
    label = table_label(table)
    scope = sample_scope(user)
    runs = QualityRun.objects.filter(table=label)
    latest = runs.filter(status__in=(QualityRun.Status.DONE, QualityRun.Status.ERROR)).order_by(
        "-finished_at", "-id").first()
    pending = runs.filter(status__in=(QualityRun.Status.QUEUED, QualityRun.Status.RUNNING)).order_by(
        "-queued_at").first()
    rank = {o: i for i, o in enumerate(OUTCOMES)}
    checks = []
    if latest is not None:
        for result in sorted(latest.results.all(), key=lambda r: (rank.get(r.outcome, 0), r.id)):
            visible = [item for item in result.sample or [] if scope.allows(item.get("source_id"))]
            columns = list(visible[0]["row"].keys()) if visible else []
            checks.append({"result": result, "columns": columns,
                           "rows": [[_cell(item["row"].get(c)) for c in columns] for item in visible],
                           "sample_hidden": len(result.sample or []) - len(visible)})
    return {"table": label, "latest": latest, "pending": pending, "checks": checks, "scope": scope,
            "history": list(runs.filter(status__in=(QualityRun.Status.DONE, QualityRun.Status.ERROR))
                            .order_by("-finished_at")[:10])}


# --------------------------------------------------------------------------------------------
# scorecards: the facts they grade, and their snapshots
# --------------------------------------------------------------------------------------------

#: the first evaluation (or one after a long pause) looks back this far; later ones at what came since the last
SCORECARD_WINDOW_DEFAULT = dt.timedelta(minutes=15)
SCORECARD_WINDOW_MAX = dt.timedelta(hours=2)


def scorecard_thresholds() -> Any:
    from quality.scorecards import Thresholds

    return Thresholds(quarantine_amber=settings.QUALITY_SCORECARD_QUARANTINE_AMBER,
                      quarantine_red=settings.QUALITY_SCORECARD_QUARANTINE_RED,
                      lag_amber_s=settings.QUALITY_SCORECARD_LAG_AMBER_S,
                      lag_red_s=settings.QUALITY_SCORECARD_LAG_RED_S,
                      silent_minutes=settings.QUALITY_SCORECARD_SILENT_MINUTES,
                      volume_drop=settings.QUALITY_SCORECARD_VOLUME_DROP)


def scorecard_window_start(now: dt.datetime) -> dt.datetime:
    """Where this evaluation's window starts: the previous evaluation (so a fix shows at the next one), or
    15 minutes back when there was none lately."""
    previous = (ScorecardSnapshot.objects.filter(kind=ScorecardSnapshot.Kind.PLATFORM, evaluated_at__lt=now)
                .order_by("-evaluated_at").values_list("evaluated_at", flat=True).first())
    if previous is None or now - previous > SCORECARD_WINDOW_MAX:
        return now - SCORECARD_WINDOW_DEFAULT
    return previous


def source_hours(*, since: dt.datetime, until: dt.datetime) -> dict[str, dict[dt.datetime, dict]]:
    """The hourly rollup as {source: {hour: {records, events, quarantined, merged, max_lag_ms}}}."""
    out: dict[str, dict[dt.datetime, dict]] = {}
    for row in SourceHour.objects.filter(hour__gte=since, hour__lte=until).values(
            "hour", "source", "records", "events", "quarantined", "merged", "max_lag_ms"):
        out.setdefault(row["source"], {})[row["hour"]] = row
    return out


def _utc_naive(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _as_utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _contract_label(subject: Any, version: Any) -> str:
    return f"{subject} v{int(version)}" if subject and version is not None else ""


def warehouse_window(conn: Any, *, start: dt.datetime, end: dt.datetime) -> dict[str, list[dict]]:
    """From the warehouse, for (start, end]: quarantined records grouped by source, contract version, reason
    and path (no payloads), and events landed per source and contract version."""
    from warehouse.ddl import LANDING_EVENTS, QUARANTINE, check_identifier, qualified
    from warehouse.load import warehouse_query

    database = check_identifier(conn.database)
    params = {"start": _utc_naive(start), "end": _utc_naive(end)}
    quarantine = warehouse_query(
        conn, "SELECT SOURCE, SOURCE_ID, CONTRACT_SUBJECT, CONTRACT_VERSION, REASON_CODE, ERROR_PATH, "  # noqa: S608
              "COUNT(*) AS N, MIN(QUARANTINED_AT) AS FIRST_AT "
              f"FROM {qualified(database, QUARANTINE)} "
              "WHERE QUARANTINED_AT > %(start)s::TIMESTAMP_NTZ(6) AND QUARANTINED_AT <= %(end)s::TIMESTAMP_NTZ(6) "
              "GROUP BY SOURCE, SOURCE_ID, CONTRACT_SUBJECT, CONTRACT_VERSION, REASON_CODE, ERROR_PATH", params)
    # valid events as landed (every copy, merged or not): the landing table stays in landing order, so a
    # LANDED_AT range prunes on Snowflake where CANONICAL.EVENTS (clustered by event date) would be scanned
    events = warehouse_query(
        conn, "SELECT SOURCE_ID, CONTRACT:name::VARCHAR AS SUBJECT, CONTRACT:version::NUMBER AS VERSION, "  # noqa: S608
              f"COUNT(*) AS N FROM {qualified(database, LANDING_EVENTS)} WHERE ROW_KIND = 'event' "
              "AND LANDED_AT > %(start)s::TIMESTAMP_NTZ(6) AND LANDED_AT <= %(end)s::TIMESTAMP_NTZ(6) "
              "GROUP BY SOURCE_ID, SUBJECT, VERSION", params)
    return {"quarantine": quarantine, "events": events}


def _latest_check_facts() -> list[Any]:
    """Checks of each table's latest finished run that did not pass, with the sources and contract versions
    of their failing rows."""
    from quality.scorecards import CheckFact

    out = []
    for label in table_labels():
        latest = (QualityRun.objects.filter(table=label, status__in=(QualityRun.Status.DONE, QualityRun.Status.ERROR))
                  .order_by("-finished_at", "-id").first())
        if latest is None:
            continue
        for r in latest.results.exclude(outcome__in=(CheckResult.Outcome.PASSED, CheckResult.Outcome.NOT_EVALUATED)):
            sources, contracts = set(), set()
            for item in r.sample or []:
                if item.get("source_id"):
                    sources.add(str(item["source_id"]))
                ref = (item.get("row") or {}).get("CONTRACT")
                if isinstance(ref, dict):
                    label_ = _contract_label(ref.get("name"), ref.get("version"))
                    if label_:
                        contracts.add(label_)
            out.append(CheckFact(table=r.table, check_key=r.check_key, check_name=r.check_name, outcome=r.outcome,
                                 measured=r.measured_value, threshold=r.threshold, checked_at=r.checked_at,
                                 result_id=r.pk, column=r.column, source_ids=frozenset(sources),
                                 contracts=frozenset(contracts), error=r.error))
    return out


def _pipeline_recent(now: dt.datetime) -> tuple[dict[str, dt.datetime], float | None]:
    """From the per-minute sample: each source's last minute with records (last 24 h), and the largest
    shard lag read in the last 5 minutes (seconds)."""
    from django.db.models import Max

    from ingest_workers.models import PipelineMinute  # read-only: the Pipeline page's sample

    last_seen = {row["source"]: row["last"] + dt.timedelta(minutes=1) for row in
                 PipelineMinute.objects.filter(minute__gte=now - dt.timedelta(hours=24), records__gt=0)
                 .exclude(source="").values("source").annotate(last=Max("minute"))}
    lag = PipelineMinute.objects.filter(source="", minute__gte=now - dt.timedelta(minutes=5)).aggregate(
        lag=Max("max_lag_ms"))["lag"]
    return {k: min(v, now) for k, v in last_seen.items()}, None if lag is None else lag / 1000


#: a source's recent volume: its last complete minutes, against the hour before them
VOLUME_RECENT_MINUTES, VOLUME_BEFORE_MINUTES = 5, 60


def volume_recent(now: dt.datetime) -> dict[str, Any]:
    """{source: scorecards.VolumeRecent} from the per-minute sample: records per minute in the last
    VOLUME_RECENT_MINUTES complete minutes against the VOLUME_BEFORE_MINUTES before them (counted from the source's
    first minute there, so a new source or a fresh install has a baseline after a few minutes). Minutes in which
    the pipeline read nothing from any source are left out of both (stopped consumers are not a source's drop:
    the freshness alert says so); a source is judged with at least 3 recent and 5 earlier such minutes."""
    from ingest_workers.models import PipelineMinute  # read-only: the Pipeline page's sample
    from quality.scorecards import VolumeRecent

    end = now.replace(second=0, microsecond=0)
    split = end - dt.timedelta(minutes=VOLUME_RECENT_MINUTES)
    first = split - dt.timedelta(minutes=VOLUME_BEFORE_MINUTES)
    rows = list(PipelineMinute.objects.filter(minute__gte=first, minute__lt=end, records__gt=0)
                .exclude(source="").values_list("minute", "source", "records"))
    running = {minute for minute, _, _ in rows}          # minutes the pipeline read records in
    out = {}
    for source in {s for _, s, _ in rows}:
        mine = [(m, n) for m, s, n in rows if s == source]
        started = min(m for m, _ in mine)
        before_minutes = sum(1 for m in running if started <= m < split)
        recent_minutes = sum(1 for m in running if m >= split)
        if before_minutes < 5 or recent_minutes < 3:
            continue
        out[source] = VolumeRecent(per_minute=round(sum(n for m, n in mine if m >= split) / recent_minutes, 2),
                                   before_per_minute=round(sum(n for m, n in mine if m < split) / before_minutes, 2),
                                   minutes=recent_minutes, before_minutes=before_minutes)
    return out


def scorecard_facts(*, now: dt.datetime, start: dt.datetime, warehouse: dict[str, list[dict]]) -> dict[str, Any]:
    """Everything the grades need: {"platform": SubjectFacts, "sources": {name: SubjectFacts},
    "contracts": {"<subject> v<n>": SubjectFacts}}. ``warehouse``: ``warehouse_window``'s rows (empty lists
    when the warehouse could not be read: the checks' errors say so)."""
    from contracts.selectors import source_list
    from ingest_workers.masking import pointer_mask
    from quality.anomaly_rules import hour_verdicts, latency_hour_verdict
    from quality.scorecards import QuarantineFact, SubjectFacts

    registered = {str(pk): name for pk, name in source_list().values_list("pk", "name")}
    by_name_or_id = {**{n: n for n in registered.values()}, **registered}
    checks = _latest_check_facts()
    last_seen, lag_s = _pipeline_recent(now)
    volumes = volume_recent(now)
    weeks = settings.QUALITY_ANOMALY_WEEKS
    hours = source_hours(since=now - dt.timedelta(weeks=weeks, hours=2), until=now)
    verdicts = hour_verdicts(hours, now=now, weeks=weeks)
    latency = latency_hour_verdict(hours, now=now, weeks=weeks)

    counts: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, name) -> records, quarantined, facts

    def bucket(kind: str, name: str) -> dict[str, Any]:
        return counts.setdefault((kind, name), {"records": 0, "quarantined": 0, "quarantine": []})

    for row in warehouse.get("events", []):
        n = int(row["N"] or 0)
        source = registered.get(str(row["SOURCE_ID"]))
        contract = _contract_label(row.get("SUBJECT"), row.get("VERSION"))
        for kind, name in (("platform", "platform"), ("source", source), ("contract", contract)):
            if name:
                bucket(kind, name)["records"] += n
    for row in warehouse.get("quarantine", []):
        n = int(row["N"] or 0)
        source = by_name_or_id.get(str(row.get("SOURCE_ID") or "")) or by_name_or_id.get(str(row.get("SOURCE") or ""))
        contract = _contract_label(row.get("CONTRACT_SUBJECT"), row.get("CONTRACT_VERSION"))
        # a path is shown to anyone with a portal role: a segment that may be personal (a map key) is masked
        fact = QuarantineFact(reason_code=row.get("REASON_CODE") or "unknown",
                              error_path=pointer_mask(row.get("ERROR_PATH") or ""),
                              count=n, first_at=_as_utc(row.get("FIRST_AT")), contract=contract)
        for kind, name in (("platform", "platform"), ("source", source), ("contract", contract)):
            if name:
                b = bucket(kind, name)
                b["records"] += n
                b["quarantined"] += n
                b["quarantine"].append(fact)

    def facts(kind: str, name: str, **extra: Any) -> Any:
        b = counts.get((kind, name), {"records": 0, "quarantined": 0, "quarantine": []})
        return SubjectFacts(name=name, window_start=start, window_end=now, records=b["records"],
                            quarantined=b["quarantined"], quarantine=_merge_quarantine(b["quarantine"]), **extra)

    sources = {}
    for source_id, name in registered.items():
        sources[name] = facts("source", name,
                              checks=tuple(c for c in checks if source_id in c.source_ids and c.outcome != "error"),
                              last_seen_at=last_seen.get(name), volume_recent=volumes.get(name),
                              anomalies=tuple(v.as_dict() for v in verdicts.get(name, ()) if v is not None))
    contract_names = {name for kind, name in counts if kind == "contract"}
    contract_names |= {label_ for c in checks for label_ in c.contracts}
    contract_names |= {f"{v['subject']} v{v['version']}" for v in _versions_in_force()}
    contracts = {name: facts("contract", name, checks=tuple(c for c in checks if name in c.contracts))
                 for name in sorted(contract_names)}
    platform = facts("platform", "platform", checks=tuple(checks), lag_s=lag_s,
                     anomalies=(latency.as_dict(),) if latency is not None else ())
    return {"platform": platform, "sources": sources, "contracts": contracts}


def _versions_in_force() -> list[dict]:
    from contracts.selectors import contract_versions_in_force

    return [v for v in contract_versions_in_force() if v.get("status") == "approved"]


def _merge_quarantine(facts: list[Any]) -> tuple[Any, ...]:
    """The same reason and path from several contract versions or source spellings: one fact."""
    import dataclasses as dc

    merged: dict[tuple[str, str, str], Any] = {}
    for f in facts:
        key = (f.reason_code, f.error_path, f.contract)
        old = merged.get(key)
        if old is None:
            merged[key] = f
        else:
            firsts = [t for t in (old.first_at, f.first_at) if t is not None]
            merged[key] = dc.replace(old, count=old.count + f.count, first_at=min(firsts) if firsts else None)
    return tuple(merged.values())


def scorecard_previous_since(kind: str, subject: str, *, before: dt.datetime) -> dict[str, dt.datetime | None]:
    """Each reason key's ``since`` in the scorecard's previous snapshot."""
    snap = (ScorecardSnapshot.objects.filter(kind=kind, subject=subject, evaluated_at__lt=before)
            .order_by("-evaluated_at").first())
    if snap is None:
        return {}
    return {r["key"]: _as_utc(r.get("since")) for r in snap.reasons or []}


def _shown(snapshot: ScorecardSnapshot) -> ScorecardSnapshot:
    """The snapshot with its stored ISO times as datetimes for the templates (``reasons_shown``,
    ``window_start``, ``window_end``)."""
    snapshot.reasons_shown = [{**r, "since_at": _as_utc(r.get("since"))} for r in snapshot.reasons or []]
    facts = snapshot.facts or {}
    snapshot.window_start = _as_utc(facts.get("window_start"))
    snapshot.window_end = _as_utc(facts.get("window_end"))
    return snapshot


def scorecards_latest(*, user: Any = None) -> dict[str, Any]:
    """The newest snapshot of every scorecard: the platform's, the sources' (the viewer's own first) and the
    contract versions'."""
    from contracts.page_selectors import sources_user_may_edit
    from portal.roles import is_admin

    latest_at = ScorecardSnapshot.objects.order_by("-evaluated_at").values_list("evaluated_at", flat=True).first()
    if latest_at is None:
        return {"evaluated_at": None, "platform": None, "own": [], "sources": [], "contracts": []}
    rows = [_shown(s) for s in ScorecardSnapshot.objects.filter(evaluated_at=latest_at)]
    own = set()
    if user is not None and getattr(user, "is_authenticated", False) and not is_admin(user):  # admins: every source
        own = set(sources_user_may_edit(user).values_list("name", flat=True))
    rank = {"red": 0, "amber": 1, "unknown": 2, "green": 3}

    def order(s: ScorecardSnapshot) -> tuple:
        return (rank.get(s.level, 9), s.subject)

    sources = sorted((s for s in rows if s.kind == ScorecardSnapshot.Kind.SOURCE), key=order)
    return {"evaluated_at": latest_at,
            "platform": next((s for s in rows if s.kind == ScorecardSnapshot.Kind.PLATFORM), None),
            "own": [s for s in sources if s.subject in own],
            "sources": [s for s in sources if s.subject not in own],
            "contracts": sorted((s for s in rows if s.kind == ScorecardSnapshot.Kind.CONTRACT), key=order)}


#: more evaluations than this in the chart's 30 days (every 5 min makes 8,640) are drawn one point per hour
HISTORY_POINTS_MAX = 800


def scorecard_history(kind: str, subject: str, *, now: dt.datetime, days: int = 30) -> dict[str, list]:
    """The scorecard's snapshots of the last ``days`` for its chart: labels, scores, levels (oldest first).
    Past ``HISTORY_POINTS_MAX`` evaluations, one point per hour: its worst evaluation (a red hour stays red)."""
    since = now - dt.timedelta(days=days)
    snaps = list(ScorecardSnapshot.objects.filter(kind=kind, subject=subject, evaluated_at__gte=since)
                 .order_by("evaluated_at").values_list("evaluated_at", "score", "level"))
    fmt = "%Y-%m-%d %H:%M"
    if len(snaps) > HISTORY_POINTS_MAX:
        worst: dict[dt.datetime, tuple[dt.datetime, int, str]] = {}
        for at, score, level in snaps:
            hour = at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
            if hour not in worst or score < worst[hour][1]:
                worst[hour] = (hour, score, level)
        snaps = [worst[h] for h in sorted(worst)]
        fmt = "%Y-%m-%d %H:00"
    return {"labels": [at.astimezone(dt.UTC).strftime(fmt) for at, _, _ in snaps],
            "scores": [score for _, score, _ in snaps], "levels": [level for _, _, level in snaps]}


def scorecard_latest(kind: str, subject: str) -> ScorecardSnapshot | None:
    snapshot = ScorecardSnapshot.objects.filter(kind=kind, subject=subject).order_by("-evaluated_at").first()
    return None if snapshot is None else _shown(snapshot)


def scorecard_check_rows(snapshot: ScorecardSnapshot, *, user: Any) -> list[dict]:
    """The check results behind a snapshot's failed checks, each with its failed-row sample cut to the
    viewer's sources (and, on a source's scorecard, to that source's rows)."""
    from contracts.selectors import source_list

    ids = [r["details"].get("result_id") for r in snapshot.reasons or [] if r.get("details", {}).get("result_id")]
    scope = sample_scope(user)
    only: set[str] | None = None
    if snapshot.kind == ScorecardSnapshot.Kind.SOURCE:
        only = {str(pk) for pk in source_list().filter(name=snapshot.subject).values_list("pk", flat=True)}
    out = []
    for result in CheckResult.objects.filter(pk__in=ids).order_by("table", "check_key"):
        visible = [item for item in result.sample or []
                   if scope.allows(item.get("source_id")) and (only is None or str(item.get("source_id")) in only)]
        columns = list(visible[0]["row"].keys()) if visible else []
        out.append({"result": result, "columns": columns,
                    "rows": [[_cell(item["row"].get(c)) for c in columns] for item in visible],
                    "sample_hidden": len(result.sample or []) - len(visible)})
    return out


def scorecard_quarantined(snapshot: ScorecardSnapshot, *, user: Any, limit: int = 20) -> dict[str, Any]:
    """The quarantined records behind a source's or contract version's scorecard in its window (no payloads:
    the quarantine's own page shows each, masked), if the viewer may see them."""
    from ingest_workers.masking import pointer_mask
    from ingest_workers.page_selectors import LIST_COLUMNS, quarantine_scope
    from warehouse.connection import WarehouseError, warehouse_connection
    from warehouse.ddl import QUARANTINE, check_identifier, qualified
    from warehouse.load import warehouse_query

    scope = quarantine_scope(user)
    facts = snapshot.facts or {}
    if scope is None or snapshot.kind == ScorecardSnapshot.Kind.PLATFORM or not facts.get("quarantined"):
        return {"rows": [], "allowed": scope is not None, "error": ""}
    params: dict[str, Any] = {"start": _utc_naive(_as_utc(facts["window_start"])),
                              "end": _utc_naive(_as_utc(facts["window_end"])), "limit": int(limit)}
    if snapshot.kind == ScorecardSnapshot.Kind.SOURCE:
        where = "SOURCE = %(source)s"
        params["source"] = snapshot.subject
    else:
        subject, _, version = snapshot.subject.rpartition(" v")
        where = "CONTRACT_SUBJECT = %(subject)s AND CONTRACT_VERSION = %(version)s"
        params.update(subject=subject, version=int(version) if version.isdigit() else -1)
    try:
        with warehouse_connection() as conn:
            rows = warehouse_query(
                conn, f"SELECT {', '.join(LIST_COLUMNS)} FROM {qualified(check_identifier(conn.database), QUARANTINE)} "  # noqa: S608
                      f"WHERE {where} AND QUARANTINED_AT > %(start)s::TIMESTAMP_NTZ(6) "
                      "AND QUARANTINED_AT <= %(end)s::TIMESTAMP_NTZ(6) ORDER BY QUARANTINED_AT DESC LIMIT %(limit)s",
                params)
    except WarehouseError as err:
        return {"rows": [], "allowed": True, "error": f"The warehouse could not be read: {err}"}
    rows = [{**{k.lower(): v for k, v in r.items()}, "quarantined_at": _as_utc(r.get("QUARANTINED_AT")),
             "error_path": pointer_mask(r.get("ERROR_PATH") or "")} for r in rows]
    return {"rows": [r for r in rows if scope.allows(r)], "allowed": True, "error": ""}


def platform_health() -> dict[str, Any] | None:
    """The home page's glance: the platform's latest grade, its worst reason, and how many sources are at
    each level. None before the first evaluation."""
    platform = (ScorecardSnapshot.objects.filter(kind=ScorecardSnapshot.Kind.PLATFORM)
                .order_by("-evaluated_at").first())
    if platform is None:
        return None
    levels: dict[str, int] = {}
    for level in ScorecardSnapshot.objects.filter(kind=ScorecardSnapshot.Kind.SOURCE,
                                                  evaluated_at=platform.evaluated_at).values_list("level", flat=True):
        levels[level] = levels.get(level, 0) + 1
    return {"platform": _shown(platform), "sources": levels}
