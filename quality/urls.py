"""Quality pages, mounted at /quality/ by portal/urls.py."""

from django.urls import path

from quality import alert_views, views

urlpatterns = [
    path("", views.quality_overview, name="quality_overview"),
    path("run/", views.quality_run_now, name="quality_run_now"),
    path("tables/<str:table>/", views.quality_table, name="quality_table"),
    path("scorecards/", views.quality_scorecards, name="quality_scorecards"),
    path("scorecards/<str:kind>/<path:subject>/", views.quality_scorecard, name="quality_scorecard"),
    path("tables/<str:table>/contract.yml", views.quality_contract_yaml, name="quality_contract_yaml"),
    path("alerts/", alert_views.alert_list, name="alert_list"),
    path("alerts/<int:alert_id>/acknowledge/", alert_views.alert_acknowledge, name="alert_acknowledge"),
    path("alerts/<int:alert_id>/silence/", alert_views.alert_silence, name="alert_silence"),
    path("alerts/channels/", alert_views.alert_channels, name="alert_channels"),
    path("alerts/channels/<int:channel_id>/", alert_views.alert_channel_edit, name="alert_channel_edit"),
    path("alerts/channels/<int:channel_id>/delete/", alert_views.alert_channel_delete, name="alert_channel_delete"),
    path("runbook/", alert_views.runbook, name="runbook"),
]
