"""The filing form: regulation, requester's reference, received-at as a wall-clock time in a zone, identifiers
of any kind (a kind selector per row)."""

from __future__ import annotations

from django import forms

from deletion import sla, subject
from deletion.erasure_types import IdentifierKind
from deletion.models import Regulation

IDENTIFIER_ROWS = 8
KIND_CHOICES = [("", "—"), *[(kind.value, subject.KIND_LABELS[kind]) for kind in IdentifierKind]]


class TicketFileForm(forms.Form):
    regulation = forms.ChoiceField(choices=Regulation.choices)
    requester_reference = forms.CharField(max_length=200, label="Requester's reference",
                                          help_text="The case number or reference the requester gave.")
    received_at = forms.DateTimeField(label="Received at (wall-clock time)",
                                      input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"],
                                      widget=forms.DateTimeInput(attrs={"type": "datetime-local"},
                                                                 format="%Y-%m-%dT%H:%M"),
                                      help_text="When the request reached us, in the zone below; the SLA clock "
                                                "starts here.")
    received_tz = forms.ChoiceField(label="Time zone of that time", initial="UTC")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["received_tz"].choices = [(name, name) for name in sla.zone_names()]
        for row in range(IDENTIFIER_ROWS):
            # the rows are a table without <label>s: each widget names itself for screen readers (and tests)
            kind_label, value_label = f"Identifier {row + 1}: kind", f"Identifier {row + 1}: value"
            self.fields[f"kind_{row}"] = forms.ChoiceField(
                choices=KIND_CHOICES, required=False, label=kind_label,
                widget=forms.Select(attrs={"aria-label": kind_label}))
            self.fields[f"value_{row}"] = forms.CharField(
                required=False, max_length=subject.MAX_VALUE_LENGTH, label=value_label, strip=True,
                widget=forms.TextInput(attrs={"aria-label": value_label}))

    def fields_received(self):
        return [self[name] for name in ("regulation", "requester_reference", "received_at", "received_tz")]

    def identifier_rows(self):
        return [(self[f"kind_{row}"], self[f"value_{row}"]) for row in range(IDENTIFIER_ROWS)]

    def clean_received_at(self):
        value = self.cleaned_data["received_at"]
        # Django made it aware in the site's zone; the officer meant the wall-clock time in received_tz.
        return value.replace(tzinfo=None) if value.tzinfo else value

    def clean(self):
        cleaned = super().clean()
        local, zone = cleaned.get("received_at"), cleaned.get("received_tz")
        if local is not None and zone:
            try:
                cleaned["received_at_utc"] = sla.received_at_in_zone(local, zone)
            except sla.ReceivedAtError as err:
                self.add_error("received_at", str(err))
        pairs = []
        for row in range(IDENTIFIER_ROWS):
            kind, value = cleaned.get(f"kind_{row}") or "", (cleaned.get(f"value_{row}") or "").strip()
            if not kind and not value:
                continue
            if not kind:
                self.add_error(f"kind_{row}", "Pick the kind of this identifier.")
                continue
            try:
                pairs.append(subject.identifier_parse(kind, value))
            except subject.IdentifierError as err:
                self.add_error(f"value_{row}", str(err))
        if not pairs and not self.errors:
            raise forms.ValidationError("Give at least one identifier of the person to erase.")
        cleaned["identifiers"] = list(dict.fromkeys(pairs))
        return cleaned


class RemoveIdentifierForm(forms.Form):
    identifier = forms.CharField(max_length=600)
    reason = forms.CharField(max_length=1000, widget=forms.TextInput)
