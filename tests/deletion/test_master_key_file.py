"""The embedded default's archive master key file (deletion.subject_keys.local_master_key_load): processes that
start together and all find no key file end up with one key, the file's, and none sees it half-written; else
archive lines sealed by one process would be unreadable by the others (and by every later one)."""

from __future__ import annotations

import base64
import multiprocessing
import os

import pytest

from deletion.subject_keys import local_master_key_load

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def key_file(settings, tmp_path):
    settings.ARCHIVE_LOCAL_MASTER_KEY = ""  # the embedded default: no configured key, the file in var/
    path = tmp_path / "var" / "archive-master.key"
    settings.ARCHIVE_LOCAL_MASTER_KEY_FILE = str(path)
    return path


def _load_into(answers, barrier=None) -> None:
    if barrier is not None:
        barrier.wait()
    try:
        answers.put(("key", local_master_key_load()))
    except Exception as err:  # noqa: BLE001 - reported to the test
        answers.put(("error", f"{type(err).__name__}: {err}"))


def _load_slowly_into(answers, generating, go_on) -> None:
    """Load the key, pausing while this process generates it until the test says go on."""
    real = os.urandom

    def paused(n: int) -> bytes:
        if n == 32:  # the master key itself
            generating.set()
            assert go_on.wait(60), "the test never let the key generation go on"
        return real(n)

    os.urandom = paused
    _load_into(answers)


def test_a_process_starting_while_another_writes_the_key_file_reads_the_same_key(key_file):
    answers, generating, go_on = FORK.Queue(), FORK.Event(), FORK.Event()
    slow = FORK.Process(target=_load_slowly_into, args=(answers, generating, go_on))
    slow.start()
    try:
        assert generating.wait(60), "the first process never generated a key"
        try:
            here = local_master_key_load()   # this process starts meanwhile
        finally:
            go_on.set()
        kind, there = answers.get(timeout=60)
    finally:
        slow.join(timeout=60)
    assert kind == "key", there
    assert there == here
    assert base64.b64decode(key_file.read_bytes()) == here
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in key_file.parent.iterdir()] == ["archive-master.key"]  # no temporary file left


def test_processes_starting_together_all_get_the_one_key_in_the_file(key_file):
    answers, barrier = FORK.Queue(), FORK.Barrier(8)
    racers = [FORK.Process(target=_load_into, args=(answers, barrier)) for _ in range(8)]
    for racer in racers:
        racer.start()
    got = [answers.get(timeout=60) for _ in racers]
    for racer in racers:
        racer.join(timeout=60)
    assert [kind for kind, _ in got] == ["key"] * 8, got
    assert {key for _, key in got} == {base64.b64decode(key_file.read_bytes())}
    assert local_master_key_load() == got[0][1]   # and every later start reads it


@pytest.mark.django_db
def test_an_empty_key_file_left_by_an_older_release_is_replaced_when_no_key_was_wrapped_under_it(key_file):
    key_file.parent.mkdir(parents=True)
    key_file.write_bytes(b"")                    # killed between creating the file and writing the key
    key = local_master_key_load()
    assert len(key) == 32
    assert base64.b64decode(key_file.read_bytes()) == key == local_master_key_load()   # kept: the next start too


@pytest.mark.django_db
def test_an_empty_key_file_is_not_replaced_once_keys_are_wrapped_and_the_error_names_it(key_file):
    from deletion.models import SubjectKey

    key_file.parent.mkdir(parents=True)
    key_file.write_bytes(b"")
    SubjectKey.objects.create(id_hash="a" * 64, key_id="b" * 32, wrapped_key=b"wrapped under the lost key",
                              master_key="local")
    with pytest.raises(ValueError, match=str(key_file)):
        local_master_key_load()
    assert key_file.read_bytes() == b""
