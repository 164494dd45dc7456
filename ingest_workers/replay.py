"""Reading a period of the raw archive back as stream records (for a replay or a backfill).

``archive_period_read(day_from=, day_to=)`` walks the objects of those UTC days (``raw/dt=…``) and
returns their records in object and line order, opened through the subject keyring. Records of
erased subjects are skipped and counted (``shredded``: their keys are gone; ``suppressed``: lines that
never kept a record). Whatever lands the records afterwards must also pass the produced events
through ``deletion.suppression.suppression_filter``, as the re-drive does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import obstore

from ingest_workers.archive import ArchiveReader, _join, archive_store
from ingest_workers.pipeline import RawRecord


@dataclasses.dataclass
class ArchivePeriod:
    records: list[tuple[RawRecord, tuple[str, int]]]  # (record, its archive location)
    objects: int = 0
    #: lines of erased subjects: unreadable (key shredded) or stored without their record (suppressed)
    shredded: int = 0

    def summary(self) -> str:
        text = f"{len(self.records)} records read from {self.objects} objects"
        if self.shredded:
            text += f"; {self.shredded} records unreadable: erased subject"
        return text


def archive_period_read(*, day_from: dt.date, day_to: dt.date, reader: ArchiveReader | None = None) -> ArchivePeriod:
    """Every readable record archived on the days from ``day_from`` to ``day_to`` (inclusive, UTC)."""
    from django.conf import settings

    from ingest_workers.redrive import _line_bytes

    reader = reader or ArchiveReader()
    store, prefix = archive_store()
    base = settings.RAW_ARCHIVE_URL.rstrip("/")
    out = ArchivePeriod(records=[])
    day = day_from
    while day <= day_to:
        keys: list[str] = []
        for chunk in obstore.list(store, prefix=_join(prefix, f"raw/dt={day:%Y-%m-%d}/")):
            keys.extend(item["path"] for item in chunk)
        for key in sorted(keys):
            relative = key[len(prefix) + 1:] if prefix else key
            uri = f"{base}/{relative}"
            before = reader.shredded
            lines = reader.object_lines(uri)
            out.objects += 1
            out.shredded += reader.shredded - before
            for offset, line in lines:
                data = _line_bytes(line)
                if data is None:
                    continue
                out.records.append((RawRecord(str(line["shard"]), str(line["seq"]), data, int(line["arrival"])),
                                    (uri, offset)))
        day += dt.timedelta(days=1)
    return out
