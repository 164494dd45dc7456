"""Alert pages: /quality/alerts/ (open and recent alerts, their notifications and attempts, the rules' last
evaluation; acknowledge and silence), /quality/alerts/channels/ (where notifications go) and
/quality/runbook/ (docs/runbook.md, which every alert links to).

Anyone with a portal role reads the alerts and the runbook; data engineers and admins acknowledge, silence
and manage channels; only admins may let a webhook reach a private address.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal.roles import is_admin, is_data_engineer
from quality import alert_selectors, alerts
from quality.models import Alert, NotificationChannel


@require_GET
@login_required
def alert_list(request: HttpRequest) -> HttpResponse:
    return render(request, "quality/alerts.html", {
        "open_rows": alert_selectors.alert_view_rows(alert_selectors.alerts_open(request.user), viewer=request.user),
        "recent_rows": alert_selectors.alert_view_rows(alert_selectors.alerts_recent(request.user),
                                                       viewer=request.user),
        "rule_states": alert_selectors.alert_rule_states(),
        "channel_count": len(alert_selectors.channels()),
        "can_act": is_data_engineer(request.user), "silence_choices": alert_selectors.SILENCE_CHOICES})


def _alert_or_404(alert_id: int, viewer) -> Alert:
    alert = next(iter(alert_selectors._visible_to(Alert.objects.filter(pk=alert_id), viewer)), None)
    if alert is None:
        raise Http404("No such alert.")
    return alert


@require_POST
@login_required
def alert_acknowledge(request: HttpRequest, alert_id: int) -> HttpResponse:
    alert = _alert_or_404(alert_id, request.user)
    try:
        alerts.alert_acknowledge(actor=request.user, alert_id=alert.pk)
    except alerts.AlertActionForbidden as err:
        raise PermissionDenied(str(err)) from err
    messages.success(request, f"Acknowledged: {alert.summary}")
    return redirect("alert_list")


class SilenceForm(forms.Form):
    minutes = forms.TypedChoiceField(coerce=int, choices=[(0, "end the silence"), *alert_selectors.SILENCE_CHOICES])


@require_POST
@login_required
def alert_silence(request: HttpRequest, alert_id: int) -> HttpResponse:
    alert = _alert_or_404(alert_id, request.user)
    form = SilenceForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose how long to silence the alert for: "
                                + "; ".join(e for errs in form.errors.values() for e in errs))
        return redirect("alert_list")
    minutes = form.cleaned_data["minutes"]
    try:
        alerts.alert_silence(actor=request.user, alert_id=alert.pk, minutes=minutes)
    except alerts.AlertActionForbidden as err:
        raise PermissionDenied(str(err)) from err
    label = dict(alert_selectors.SILENCE_CHOICES).get(minutes)
    text = f"Silenced for {label}: {alert.summary}" if minutes else f"Silence ended: {alert.summary}"
    messages.success(request, text)
    return redirect("alert_list")


class ChannelForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="Letters, digits, dots, dashes, underscores")
    kind = forms.ChoiceField(choices=NotificationChannel.Kind.choices)
    target = forms.CharField(max_length=2000, help_text="Email addresses (comma-separated), or the webhook URL "
                                                        "(Slack incoming webhook or anything that takes its JSON)")
    min_severity = forms.ChoiceField(choices=[("warning", "warning"), ("critical", "critical")], initial="warning",
                                     label="Minimum severity")
    enabled = forms.BooleanField(required=False, initial=True)
    allow_private_address = forms.BooleanField(
        required=False, label="Allow a private address (admins only)",
        help_text="Lets the webhook reach a loopback, link-local or private address, e.g. a relay inside the network")

    def __init__(self, *args, admin: bool, **kwargs):
        super().__init__(*args, **kwargs)
        if not admin:
            del self.fields["allow_private_address"]


def _channel_save(request: HttpRequest, form: ChannelForm, channel: NotificationChannel | None) -> bool:
    if not form.is_valid():
        return False
    data = form.cleaned_data
    try:
        alerts.notification_channel_save(
            actor=request.user, name=data["name"], kind=data["kind"], target=data["target"], enabled=data["enabled"],
            min_severity=data["min_severity"], allow_private_address=data.get("allow_private_address"),
            channel_id=channel.pk if channel else None)
    except alerts.ChannelInvalid as err:
        for field, message in err.errors.items():
            form.add_error(field if field in form.fields else None, message)
        return False
    except alerts.AlertActionForbidden as err:
        form.add_error(None, str(err))
        return False
    messages.success(request, f"Channel {data['name']} saved.")
    return True


def _may_manage(request: HttpRequest) -> None:
    if not is_data_engineer(request.user):
        raise PermissionDenied("Only data engineers and admins manage alert channels.")


@require_http_methods(["GET", "POST"])
@login_required
def alert_channels(request: HttpRequest) -> HttpResponse:
    _may_manage(request)
    admin = is_admin(request.user)
    form = ChannelForm(request.POST or None, admin=admin, initial={"enabled": True, "min_severity": "warning"})
    if request.method == "POST" and _channel_save(request, form, None):
        return redirect("alert_channels")
    return render(request, "quality/alert_channels.html", {
        "channels": alert_selectors.channels(), "form": form, "is_admin": admin},
        status=400 if request.method == "POST" else 200)


@require_http_methods(["GET", "POST"])
@login_required
def alert_channel_edit(request: HttpRequest, channel_id: int) -> HttpResponse:
    _may_manage(request)
    channel = NotificationChannel.objects.filter(pk=channel_id).first()
    if channel is None:
        raise Http404("No such channel.")
    admin = is_admin(request.user)
    initial = {"name": channel.name, "kind": channel.kind, "target": channel.target, "enabled": channel.enabled,
               "min_severity": channel.min_severity, "allow_private_address": channel.allow_private_address}
    form = ChannelForm(request.POST or None, admin=admin, initial=initial)
    if request.method == "POST" and _channel_save(request, form, channel):
        return redirect("alert_channels")
    return render(request, "quality/alert_channel_edit.html", {"channel": channel, "form": form, "is_admin": admin},
                  status=400 if request.method == "POST" else 200)


@require_POST
@login_required
def alert_channel_delete(request: HttpRequest, channel_id: int) -> HttpResponse:
    _may_manage(request)
    channel = NotificationChannel.objects.filter(pk=channel_id).first()
    if channel is None:
        raise Http404("No such channel.")
    alerts.notification_channel_delete(actor=request.user, channel_id=channel.pk)
    messages.success(request, f"Channel {channel.name} deleted.")
    return redirect("alert_channels")


@require_GET
@login_required
def runbook(request: HttpRequest) -> HttpResponse:
    html, sections = alert_selectors.runbook_html(page_links=is_data_engineer(request.user))
    # markdown-it renders with raw HTML disabled (escaped), from a file in the repository
    return render(request, "quality/runbook.html", {"runbook": mark_safe(html), "sections": sections})  # noqa: S308
