"""Train the raw archive's shared zstd dictionary from synthetic records only, and write it.

    .venv/bin/python bench/archive_dict_train.py [--check]

The dictionary ships with the code (``ingest_workers/archive_dicts/zd<N>.dict``) and is shared by
every encrypted archive block, so it must hold no personal data: it is trained only on records the
demo's traffic generator makes from the contract presets' synthetic samples (fixed seed, fixed clock),
never on stream records. ``--check`` retrains and fails when the shipped file differs (the test suite
runs the same check). A new dictionary gets a new version N: lines name the version they were
compressed with, and every shipped version stays readable.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="retrain and compare with the shipped file")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from ingest_workers.archive_dictionary import DICTIONARY_VERSION, dictionary_path, dictionary_train

    trained = dictionary_train()
    path = dictionary_path(DICTIONARY_VERSION)
    if args.check:
        same = path.read_bytes() == trained
        print(f"{path}: {'matches' if same else 'DIFFERS from'} the synthetic training")
        return 0 if same else 1
    path.write_bytes(trained)
    print(f"wrote {path} ({len(trained)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
