"""Portal pages of the pipeline: quarantine and live status (mounted at the root by portal/urls.py)."""

from django.urls import path

from ingest_workers import views

urlpatterns = [
    path("quarantine/", views.quarantine_list, name="quarantine_list"),
    path("quarantine/redrive/", views.quarantine_redrive, name="quarantine_redrive"),
    path("quarantine/<str:quarantine_id>/", views.quarantine_detail, name="quarantine_detail"),
    path("pipeline/", views.pipeline_status, name="pipeline_status"),
    path("pipeline/live/", views.pipeline_live, name="pipeline_live"),
]
