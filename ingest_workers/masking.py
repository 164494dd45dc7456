"""Masking personal data in quarantined payloads before a person sees them.

A quarantined record is shown in the portal so an engineer can see *why* it failed, not what a
user wrote. ``payload_mask`` replaces every value that may be personal by a marker that keeps only
its type and size (``"‹masked string · 42 chars›"``); keys, structure and every other value stay,
which is what debugging a schema violation needs. A value is masked when

* it sits under a key the canonical model marks personal (``x-personal``: ``content``, ``email``,
  ``display_name``, ``device_id``, ``platform_metadata`` …): the whole subtree is masked;
* it sits at a source path the contract's mapping feeds into a personal canonical field
  (``message.text`` → ``content``): ``personal_source_paths`` derives these; subtree masked;
* its key names a person (``user``, ``userId``, ``author``, ``traits``, ``profile`` …): subtree masked;
* its key names personal content (``text``, ``message``, ``body``, ``email``, ``name``, ``phone``,
  ``address``, ``ip`` …) unless the key only describes it (``messageId``, ``contentType``,
  ``textLength``): scalar values masked, containers are walked with the same rules;
* the value itself looks personal wherever it is: an e-mail address, a phone number, an IP address,
  or free text (three words or more).

When in doubt it masks: a hidden enum value costs a click to the contract; a leaked message does not
come back. ``detail_mask`` applies the same care to the validator's error text, which can quote a
value. Pure: no Django, no network, no clock.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MaskedPayload",
    "payload_mask",
    "detail_mask",
    "personal_source_paths",
    "canonical_personal_names",
    "key_is_personal",
    "masked_marker",
    "pointer_mask",
    "canonical_personal_targets",
    "MASK_PREFIX",
]

MASK_PREFIX = "‹masked"
#: keys whose whole subtree is about a person
IDENTITY_TOKENS = frozenset({
    "user", "users", "username", "userid", "person", "people", "customer", "author", "sender", "recipient",
    "member", "contact", "profile", "traits", "identity", "owner", "participant", "account", "subscriber",
    "patient", "speaker", "caller", "visitor", "slots",  # Alexa slots hold what the user said
})
#: keys whose (scalar) value is personal content or an identifier of a person
CONTENT_TOKENS = frozenset({
    "text", "content", "message", "messages", "body", "comment", "comments", "transcript", "utterance",
    "speech", "prompt", "completion", "email", "mail", "phone", "mobile", "tel", "fax", "name", "names",
    "firstname", "lastname", "fullname", "displayname", "nickname", "surname", "address", "street", "postcode",
    "zip", "zipcode", "ip", "ipaddress", "ssn", "dob", "birthdate", "birthday", "password", "secret", "token",
    "cookie", "authorization", "location", "latitude", "longitude", "lat", "lon", "lng", "geo", "raw",
})
#: last tokens that make a key describe a value rather than hold it (``messageId``, ``contentType``)
DESCRIPTIVE_SUFFIXES = frozenset({
    "id", "ids", "type", "types", "kind", "format", "count", "length", "len", "size", "at", "time", "ts",
    "ms", "version", "status", "lang", "language", "locale", "encoding", "mime", "mimetype", "hash",
})
# Note: the canonical names are matched with their separators removed ("device_id" == "deviceId").

_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_EMAIL = re.compile(r"[^@\s\"']{1,64}@[^@\s\"']+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"^(?:\+[\d\s().-]{7,20}|\(\d{2,5}\)[\d\s.-]{5,16}|\d{3}[\s.-]\d{3}[\s.-]\d{4})$")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_IPV6 = re.compile(r"^[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}$")
# a quoted literal in error text: "…" (JSON, possibly cut short with "…") or '…' (Python repr)
_QUOTED = re.compile(r"(?<![\w\\])\"((?:[^\"\\\n]|\\.)*?)(?:\"|…)|(?<!\w)'((?:[^'\\\n]|\\.)*)'(?!\w)")
MIN_SECRET_LENGTH = 3  # shorter values are too common to search for in error text


def _normalize(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _tokens(key: str) -> list[str]:
    return [t.lower() for t in _CAMEL.findall(key)]


@functools.lru_cache(maxsize=4096)
def key_is_personal(key: str, personal_names: frozenset[str] = frozenset()) -> str | None:
    """How a key makes its value personal: ``"subtree"``, ``"scalar"``, or None."""
    norm = _normalize(key)
    if not norm:
        return None
    if norm in personal_names:
        return "subtree"
    tokens = _tokens(key) or [norm]
    if norm in IDENTITY_TOKENS or any(t in IDENTITY_TOKENS for t in tokens):
        return "subtree"
    if norm in CONTENT_TOKENS:
        return "scalar"
    if tokens[-1] in DESCRIPTIVE_SUFFIXES:
        return None
    if any(t in CONTENT_TOKENS for t in tokens):
        return "scalar"
    return None


def _looks_personal(value: str) -> bool:
    text = value.strip()
    if not text:
        return False
    if _EMAIL.search(text) or _IPV4.match(text) or (_IPV6.match(text) and text.count(":") >= 3):
        return True
    if _PHONE.match(text) and sum(c.isdigit() for c in text) >= 8:
        return True
    return len(text.split()) >= 3  # free text: a sentence, a page title, a user agent


def masked_marker(value: Any) -> str:
    """What a masked value becomes: its type and size, never the value."""
    if isinstance(value, bool):
        return f"{MASK_PREFIX} boolean›"
    if isinstance(value, (int, float)):
        return f"{MASK_PREFIX} number›"
    if isinstance(value, str):
        return f"{MASK_PREFIX} string · {len(value)} chars›"
    if isinstance(value, list):
        return f"{MASK_PREFIX} array · {len(value)} items›"
    if isinstance(value, dict):
        return f"{MASK_PREFIX} object · {len(value)} keys›"
    return f"{MASK_PREFIX} {type(value).__name__}›"


@dataclass
class MaskedPayload:
    value: Any
    #: JSON pointers of the masked values, in document order
    masked_paths: list[str] = field(default_factory=list)
    #: the masked strings themselves, so error text quoting them can be masked too (never shown)
    secrets: set[str] = field(default_factory=set, repr=False)

    @property
    def masked_count(self) -> int:
        return len(self.masked_paths)


def _pointer(parent: str, key: Any) -> str:
    token = str(key).replace("~", "~0").replace("/", "~1")
    return f"{parent}/{token}"


class _Masker:
    def __init__(self, personal_paths: frozenset[tuple[str, ...]], personal_names: frozenset[str]):
        self.paths = personal_paths
        self.names = personal_names
        self.out = MaskedPayload(None)

    def hide(self, value: Any, pointer: str) -> Any:
        """Mask every scalar under ``value`` (the structure of containers stays visible)."""
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                shown = self.hide_key(k)
                # the pointer names the key as the payload view shows it: a masked key stays masked in
                # the list of masked paths too
                out[shown] = self.hide(v, _pointer(pointer, shown))
            return out
        if isinstance(value, list):
            return [self.hide(v, _pointer(pointer, i)) for i, v in enumerate(value)]
        if value is None:
            return None
        if isinstance(value, str):
            self.out.secrets.add(value)
        self.out.masked_paths.append(pointer or "/")
        return masked_marker(value)

    def hide_key(self, key: Any) -> Any:
        # a map keyed by e-mail addresses or phone numbers leaks through its keys
        if isinstance(key, str) and _looks_personal(key) and len(key.split()) < 3:
            self.out.secrets.add(key)
            return f"{MASK_PREFIX} key · {len(key)} chars›"
        return key

    def walk(self, value: Any, pointer: str, path: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                child_path = (*path, str(k))
                shown = self.hide_key(k)
                child_pointer = _pointer(pointer, shown)
                how = "subtree" if child_path in self.paths else key_is_personal(str(k), self.names)
                if how == "subtree" or (how == "scalar" and not isinstance(v, (dict, list))):
                    out[shown] = self.hide(v, child_pointer)
                elif how == "scalar" and isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v):
                    out[shown] = self.hide(v, child_pointer)
                else:
                    out[shown] = self.walk(v, child_pointer, child_path)
            return out
        if isinstance(value, list):
            # array indexes are not part of a mapping path: "messages[0].text" is ("messages", "text")
            return [self.walk(v, _pointer(pointer, i), path) for i, v in enumerate(value)]
        if isinstance(value, str) and _looks_personal(value):
            return self.hide(value, pointer)
        return value


def payload_mask(
    payload: Any, *, personal_paths: Iterable[str | tuple[str, ...]] = (),
    personal_names: Iterable[str] | None = None,
) -> MaskedPayload:
    """A copy of ``payload`` with personal values replaced by ``masked_marker`` text.

    ``personal_paths``: dotted source paths (``"message.text"``) whose subtree is personal, e.g.
    from ``personal_source_paths``; ``personal_names``: key names masked wherever they appear
    (default: the canonical model's personal field names, ``canonical_personal_names()``).
    """
    names = canonical_personal_names() if personal_names is None else frozenset(_normalize(n) for n in personal_names)
    paths = frozenset(tuple(p.split(".")) if isinstance(p, str) else tuple(p) for p in personal_paths)
    masker = _Masker(paths, names)
    try:
        masker.out.value = masker.walk(payload, "", ())
    except RecursionError:  # nesting deeper than Python's stack: show nothing rather than something
        masker.out = MaskedPayload(masked_marker(payload), ["/"])
    return masker.out


def detail_mask(text: str | None, secrets: Iterable[str] = ()) -> str:
    """Error text (a validator or mapping message) with quoted values that may be personal masked.

    Masks every occurrence of the payload's masked strings (``MaskedPayload.secrets``), and any
    quoted literal that looks personal (e-mail, phone, free text) even when it is cut short
    ("\\"hello wor…"). Field names and enum symbols in quotes stay.
    """
    if not text:
        return text or ""
    out = text
    for secret in sorted({s for s in secrets if isinstance(s, str) and len(s.strip()) >= MIN_SECRET_LENGTH},
                         key=len, reverse=True):
        # messages quote values cut short ("…", 40 characters with the quotes): mask that form too
        for form in (secret, secret[:38]) if len(secret) > 38 else (secret,):
            out = _whole(form).sub(lambda _m, s=secret: masked_marker(s), out)

    def quoted(m: re.Match[str]) -> str:
        quote = '"' if m.group(1) is not None else "'"
        inner = m.group(1) if m.group(1) is not None else (m.group(2) or "")
        if inner.startswith(MASK_PREFIX) or not _looks_personal(inner.rstrip("…")):
            return m.group(0)
        return quote + masked_marker(inner) + quote

    return _QUOTED.sub(quoted, out)


def _whole(secret: str) -> re.Pattern[str]:
    """``secret`` as a pattern that matches it only where it is not part of a longer word."""
    left = r"(?<!\w)" if secret[:1].isalnum() or secret[:1] == "_" else ""
    right = r"(?!\w)" if secret[-1:].isalnum() or secret[-1:] == "_" else ""
    return re.compile(left + re.escape(secret) + right)


def _mapping_sources(spec: Any) -> list[str]:
    """The source paths one mapping field spec reads (a path string, {"path"}, {"first": [...]}…)."""
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, list):
        return [p for item in spec for p in _mapping_sources(item)]
    if not isinstance(spec, dict):
        return []
    found = []
    if isinstance(spec.get("path"), str):
        found.append(spec["path"])
    for key in ("first", "any", "all", "items", "coalesce"):
        if key in spec:
            found.extend(_mapping_sources(spec[key]))
    return found


_INDEX = re.compile(r"\[(?:\d+|\*)\]")
_BRACKET_KEY = re.compile(r"\[\"((?:[^\"\\]|\\.)*)\"\]")


def _path_segments(path: str) -> tuple[str, ...]:
    text = _BRACKET_KEY.sub(lambda m: "." + m.group(1), _INDEX.sub("", path.strip()))
    return tuple(seg for seg in text.split(".") if seg)


def personal_source_paths(mapping: Mapping[str, Any] | None, personal_targets: Iterable[str]) -> set[str]:
    """The source paths a mapping spec (docs/mapping.md) feeds into personal canonical fields.

    ``personal_targets`` are canonical field paths (``content``, ``identifiers.device_id``); the
    result is dotted source paths (``message.text``), array indexes dropped.
    """
    if not isinstance(mapping, Mapping):
        return set()
    targets = set(personal_targets)
    field_maps = [mapping.get("fields")]
    field_maps += [ev.get("fields") for ev in mapping.get("events") or () if isinstance(ev, Mapping)]
    out: set[str] = set()
    for fields in field_maps:
        if not isinstance(fields, Mapping):
            continue
        for target, spec in fields.items():
            if target in targets:
                for path in _mapping_sources(spec):
                    segments = _path_segments(path)
                    if segments:
                        out.add(".".join(segments))
    return out


@functools.lru_cache(maxsize=1)
def _canonical_personal() -> tuple[frozenset[str], frozenset[str]]:
    from contracts.canonical_model import load_canonical_model

    model = load_canonical_model()
    names: set[str] = set()
    targets: set[str] = set()

    def walk(fields: Iterable[Any]) -> None:
        for f in fields:
            if f.personal:
                names.add(_normalize(f.name))
                targets.add(f.path or f.name)
            walk(f.fields)

    walk(model.envelope)
    for event_type in model.event_types.values():
        walk(event_type.fields)
    return frozenset(names), frozenset(targets)


def canonical_personal_names() -> frozenset[str]:
    """Field names the canonical model marks personal, separators removed (``displayname``)."""
    return _canonical_personal()[0]


def canonical_personal_targets() -> frozenset[str]:
    """Mapping target paths of the personal canonical fields (``content``, ``identifiers.device_id``)."""
    return _canonical_personal()[1]


def pointer_mask(pointer: str | None, secrets: Iterable[str] = ()) -> str:
    """A JSON pointer with the segments that may be personal (a map keyed by e-mail address) masked."""
    if not pointer:
        return pointer or ""
    hidden = {s for s in secrets if isinstance(s, str)}
    out = []
    for part in pointer.split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        personal = part and (part in hidden or key in hidden or _looks_personal(key))
        # the same marker as the payload view's for that key (its length unescaped)
        out.append(f"{MASK_PREFIX} key · {len(key)} chars›" if personal else part)
    return "/".join(out)
