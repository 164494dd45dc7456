"""Portal forms. They check the shape of what was typed (JSON that parses, a choice that exists);
the services decide whether it is allowed and valid as a contract."""

from __future__ import annotations

from typing import Any

import orjson
from django import forms

from contracts.models import CompatibilityLevel, Platform, SourceKind, VersionStatus

# Shown next to every compatibility choice: what a producer may change under each mode.
COMPATIBILITY_HELP = {
    CompatibilityLevel.BACKWARD: (
        "Readers on the new schema can read data written with the latest approved version. "
        "You may add fields that have a default and remove fields."
    ),
    CompatibilityLevel.BACKWARD_TRANSITIVE: (
        "Like BACKWARD, but checked against every approved version, not only the latest. "
        "The safe default: old data in the archive stays readable by replays."
    ),
    CompatibilityLevel.FORWARD: (
        "Readers still on the latest approved version can read data written with the new schema. "
        "You may add fields and remove fields that have a default."
    ),
    CompatibilityLevel.FORWARD_TRANSITIVE: "Like FORWARD, checked against every approved version.",
    CompatibilityLevel.FULL: (
        "Both BACKWARD and FORWARD against the latest approved version: only add or remove fields "
        "that have a default."
    ),
    CompatibilityLevel.FULL_TRANSITIVE: "Like FULL, checked against every approved version.",
    CompatibilityLevel.NONE: "No compatibility check. Reviewers see every change, but nothing is refused.",
}


def compatibility_choices() -> list[tuple[str, str]]:
    return [(level.value, f"{level.value} — {COMPATIBILITY_HELP[level]}") for level in CompatibilityLevel]


class SourceCreateForm(forms.Form):
    team = forms.ModelChoiceField(queryset=None, empty_label=None, help_text="The team that owns the source.")
    name = forms.SlugField(
        max_length=63,
        help_text="Lowercase letters, digits and dashes, e.g. web-chat. It prefixes every contract's "
                  "subject.",
    )
    platform = forms.ChoiceField(choices=Platform.choices)
    kind = forms.ChoiceField(
        choices=SourceKind.choices,
        help_text="SDK and backend sources send events with a write key; webhooks are verified by a signing "
                  "secret.",
    )
    product = forms.CharField(max_length=64, required=False,
                              help_text="Product line, e.g. assistant, support.")
    description = forms.CharField(max_length=255, required=False)

    def __init__(self, *args: Any, teams: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams


class SigningSecretForm(forms.Form):
    # Not stripped: the service refuses a secret with a space around it, saying so (contracts.services).
    signing_secret = forms.CharField(
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="The secret the webhook provider signs each request with (e.g. Slack's signing secret): "
                  "12–255 printable ASCII characters.",
    )


class ContractCreateForm(forms.Form):
    source = forms.ModelChoiceField(queryset=None, empty_label=None, to_field_name="name")
    event = forms.CharField(
        max_length=63,
        help_text="Lowercase letters, digits and underscores, e.g. chat_event. The subject becomes "
                  "<source>.<event>.",
    )
    compatibility = forms.ChoiceField(
        choices=compatibility_choices, initial=CompatibilityLevel.BACKWARD_TRANSITIVE,
        widget=forms.RadioSelect,
        help_text="What a new version may change. Reviewers and CI see every change either way.",
    )
    description = forms.CharField(max_length=255, required=False)

    def __init__(self, *args: Any, sources: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["source"].queryset = sources


class CompatibilityForm(forms.Form):
    compatibility = forms.ChoiceField(choices=CompatibilityLevel.choices)


class ContractFilterForm(forms.Form):
    team = forms.ChoiceField(required=False)
    platform = forms.ChoiceField(required=False, choices=[("", "Any platform"), *Platform.choices])
    status = forms.ChoiceField(
        required=False, choices=[("", "Any status"), *VersionStatus.choices],
        help_text="Contracts with at least one version in this status.",
    )
    q = forms.CharField(required=False, label="Subject contains")

    def __init__(self, *args: Any, team_names: list[str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["team"].choices = [("", "Any team"), *[(name, name) for name in team_names]]


def _json_from(text: str, upload: Any, *, what: str) -> Any:
    """Decode JSON from an uploaded file (preferred) or the textarea; errors name line and column."""
    if upload is not None:
        raw = upload.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise forms.ValidationError(f"The uploaded {what} file is not UTF-8 text.") from err
    if not text.strip():
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as err:
        raise forms.ValidationError(
            f"The {what} is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})."
        ) from err


class VersionForm(forms.Form):
    """A proposed version: schema, mapping and samples as JSON text (or uploaded files)."""

    schema = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 18, "spellcheck": "false", "class": "code"}),
        help_text="An Avro record schema (JSON).",
    )
    schema_file = forms.FileField(required=False, label="…or upload a schema file (.avsc / .json)")
    mapping = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false", "class": "code"}),
        help_text="How each payload becomes canonical events (JSON; the format is in docs/mapping.md).",
    )
    mapping_file = forms.FileField(required=False, label="…or upload a mapping file (.json)")
    samples = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false", "class": "code"}),
        help_text="A JSON array of example payloads, previewed through the mapping (at most 20).",
    )
    team_checks = forms.CharField(
        required=False, strip=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "class": "code"}),
        label="Team checks (Soda YAML, optional)",
        help_text="Your own data-quality checks on this contract's events in CANONICAL.EVENTS: missing and invalid "
                  "on a column or attribute, failed_rows with an SQL expression (docs/quality.md). They judge only "
                  "this version's events, are reviewed with it and run in every quality cycle once approved.",
    )
    change_summary = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="What changed and why, for the reviewer.",
    )

    def clean(self) -> dict:
        data = super().clean()
        for name, what in (("schema", "schema"), ("mapping", "mapping"), ("samples", "sample payloads")):
            try:
                data[f"{name}_json"] = _json_from(data.get(name) or "", data.get(f"{name}_file"), what=what)
            except forms.ValidationError as err:
                self.add_error(name, err)
        if "schema" not in self.errors and data.get("schema_json") is None:
            self.add_error("schema", "Paste or upload the Avro schema.")
        return data


# Which form field a service error belongs to, so the message shows next to what caused it.
ERROR_CODE_FIELDS = {
    "invalid_schema": "schema", "schema_too_large": "schema",
    "invalid_mapping": "mapping", "mapping_too_large": "mapping",
    "invalid_samples": "samples", "samples_too_large": "samples",
    "invalid_team_checks": "team_checks",
}


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    comment = forms.CharField(
        required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Required when rejecting: the author sees it on the contract page.",
    )
