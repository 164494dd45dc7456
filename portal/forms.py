"""Forms of the portal's own pages (API tokens)."""

from __future__ import annotations

from django import forms

from portal import token_rules


class ApiTokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=token_rules.NAME_MAX_LENGTH,
        help_text="What will use it, e.g. “chat-platform CI”, so you know which one to revoke later.",
        error_messages={"required": "A token needs a name, e.g. the CI job that will use it."},
    )
    expires = forms.ChoiceField(
        label="Expires", choices=list(token_rules.EXPIRY_LABELS.items()), initial=token_rules.DEFAULT_EXPIRY,
        help_text="An expired token is refused; create a new one then.",
    )

    def clean_name(self) -> str:
        try:
            return token_rules.clean_name(self.cleaned_data["name"])
        except token_rules.TokenRequestError as err:
            raise forms.ValidationError(str(err)) from err
