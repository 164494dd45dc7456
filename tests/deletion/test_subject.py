"""A ticket's subject on plain data: identifiers checked as given, the confirmed subject without the removed
ones (an e-mail also as its hash), the hashed form a done ticket keeps, and which payloads mention a person."""

from __future__ import annotations

import json

import pytest

from deletion.erasure_types import ErasureSubject, Identifier, IdentifierKind, email_sha256
from deletion.platform_stores import payload_mentions, raw_mentions
from deletion.subject import (
    IdentifierError,
    confirmed_subject,
    expansion_rows,
    identifiers_parse,
    rows_hashed,
)
from tests.deletion.expanders import ALICE, ALICE_EMAIL, expand_identifiers


@pytest.mark.parametrize(("kind", "value", "message"), [
    ("phone", "+49 30 1234", "Unknown identifier kind 'phone'"),
    ("email", "alice", "is not an e-mail address"),
    ("email_sha256", "abc", "64 hexadecimal digits"),
    ("device_id", "   ", "the value is empty"),
    ("device_id", "dev\x00ice", "control characters"),
    ("anonymous_id", "a" * 513, "longer than 512"),
])
def test_identifiers_are_refused_with_the_reason(kind, value, message):
    with pytest.raises(IdentifierError, match=message):
        identifiers_parse([(kind, value)])


def test_identifiers_are_trimmed_deduplicated_and_hashes_lower_cased():
    digest = email_sha256(ALICE_EMAIL)
    assert identifiers_parse([("email", f" {ALICE_EMAIL} "), ("email", ALICE_EMAIL),
                              ("email_sha256", digest.upper())]) == [
        Identifier(IdentifierKind.EMAIL, ALICE_EMAIL), Identifier(IdentifierKind.EMAIL_SHA256, digest)]
    with pytest.raises(IdentifierError, match="at least one"):
        identifiers_parse([])


def test_the_confirmed_subject_leaves_out_removed_identifiers_and_adds_the_email_hash():
    given = [Identifier(IdentifierKind.EMAIL, ALICE_EMAIL)]
    rows = expansion_rows(expand_identifiers([Identifier(IdentifierKind.EMAIL_SHA256, email_sha256(ALICE_EMAIL))]),
                          given)
    assert rows[0]["id_key"] == f"email:{ALICE_EMAIL}" and rows[0]["given"]     # the given one first
    target = confirmed_subject("DEL-000001", rows, ["device_id:device-alice-iphone"])
    keys = {i.id_key for i in target.identifiers}
    assert f"email_sha256:{email_sha256(ALICE_EMAIL)}" in keys and f"email:{ALICE_EMAIL}" in keys
    assert "platform_user_id:T0ALICE:U0ALICE" in keys and "device_id:device-alice-iphone" not in keys
    assert target.person_ids == (ALICE,)


def test_hashed_rows_keep_no_identifier_in_clear():
    rows = expansion_rows(expand_identifiers([Identifier(IdentifierKind.ANONYMOUS_ID, "anon-alice-web")]), [])
    hashed = json.dumps(rows_hashed(rows + [{"id_key": "device_id:x", "reason": "sold to bob@example.org"}],
                                    key=b"k" * 32))
    for clear in ("anon-alice-web", "T0ALICE", ALICE, "device-alice-iphone", "device_id:x", "bob@example.org"):
        assert clear not in hashed
    assert "slack-bot" in hashed
    # keyed: the plain SHA-256 of an identifier (what a dictionary of candidates finds) is not what is kept
    import hashlib

    assert hashlib.sha256(b"device_id:x").hexdigest() not in hashed
    assert rows_hashed([{"id_key": "device_id:x"}], key=b"k" * 32) != rows_hashed([{"id_key": "device_id:x"}],
                                                                                 key=b"j" * 32)


def test_payload_mentions_values_text_and_split_slack_ids():
    target = ErasureSubject("DEL-1", (Identifier(IdentifierKind.EMAIL, ALICE_EMAIL),
                                      Identifier(IdentifierKind.PLATFORM_USER_ID, "T0ALICE:U0ALICE"),
                                      Identifier(IdentifierKind.DEVICE_ID, "d1")), ("person-alice",))
    assert payload_mentions({"user": {"email": ALICE_EMAIL}}, target)
    assert payload_mentions({"messages": [{"text": f"write to {ALICE_EMAIL}"}]}, target)
    assert payload_mentions({"team_id": "T0ALICE", "event": {"user": "U0ALICE"}}, target)
    assert payload_mentions({"device": "d1"}, target)
    assert payload_mentions({"person_id": "person-alice"}, target)
    assert not payload_mentions({"team_id": "T0ALICE", "event": {"user": "U0BOB"}}, target)
    assert not payload_mentions({"text": "odd1 and d12"}, target)              # a short id only matches whole
    assert raw_mentions(b"\x80\x04collect:T0ALICE:U0ALICE", target)
    assert not raw_mentions(b"collect:rate:web-chat:1700000000", target)


def test_a_short_identifier_matches_cache_bytes_only_quoted():
    # bare, "42" is inside every timestamp and counter: a cache erasure by it would delete other people's entries
    short = ErasureSubject("DEL-2", (Identifier(IdentifierKind.PLATFORM_USER_ID, "42"),))
    assert not raw_mentions(b"collect:rate:web-chat:1700000042", short)
    assert raw_mentions(b'{"user_id": "42", "plan": "pro"}', short)
