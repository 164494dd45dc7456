"""A test identity graph on plain data (DELETION_EXPANDER in the tests): the deletion tickets' tests need an
expansion; the real one (deletion.identity_expansion) reads IDENTITY.* in the warehouse and is tested there."""

from __future__ import annotations

from collections.abc import Sequence

from deletion.erasure_types import Expansion, Identifier, IdentifierKind, LinkedIdentifier, email_sha256

ALICE_EMAIL = "alice@example.com"
ALICE = "person-alice"
BOB = "person-bob"
SHARED_DEVICE = "device-shared-kiosk"

#: person id -> (identifier, platforms, sources, how linked)
PEOPLE: dict[str, list[tuple[Identifier, tuple[str, ...], tuple[str, ...], str]]] = {
    ALICE: [
        (Identifier(IdentifierKind.EMAIL_SHA256, email_sha256(ALICE_EMAIL)), ("web", "ios"), ("web-chat", "ios-app"),
         "e-mail hash on user.identified"),
        (Identifier(IdentifierKind.PLATFORM_USER_ID, "T0ALICE:U0ALICE"), ("slack",), ("slack-bot",),
         "Slack profile e-mail matches the e-mail hash"),
        (Identifier(IdentifierKind.ANONYMOUS_ID, "anon-alice-web"), ("web",), ("web-chat",),
         "same session as the e-mail hash"),
        (Identifier(IdentifierKind.DEVICE_ID, "device-alice-iphone"), ("ios",), ("ios-app",),
         "same app install as the e-mail hash"),
    ],
    BOB: [
        (Identifier(IdentifierKind.PLATFORM_USER_ID, "acct-bob"), ("web",), ("web-chat",), "account id"),
        (Identifier(IdentifierKind.DEVICE_ID, SHARED_DEVICE), ("android",), ("android-app",),
         "same device as acct-bob"),
    ],
}
SHARED_BY = {SHARED_DEVICE: 40}


def expand_identifiers(identifiers: Sequence[Identifier]) -> Expansion:
    given = set(identifiers)
    people = {person for person, rows in PEOPLE.items() if any(row[0] in given for row in rows)}
    linked = tuple(
        LinkedIdentifier(identifier=identifier, person_id=person, platforms=platforms, sources=sources, how=how,
                         given=identifier in given, group_size=SHARED_BY.get(identifier.value, 1))
        for person in sorted(people) for identifier, platforms, sources, how in PEOPLE[person])
    held = tuple(f"device_id {i.identifier.value} is shared by {i.group_size} people" for i in linked
                 if i.group_size >= 10)
    return Expansion(linked=linked, held_reasons=held)


def expand_unreachable(identifiers: Sequence[Identifier]) -> Expansion:
    raise ConnectionError("warehouse unreachable")
