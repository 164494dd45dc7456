"""Retention pages, mounted at /privacy/retention/ by portal/urls.py."""

from django.urls import path

from deletion import retention_views

urlpatterns = [
    path("", retention_views.retention_runs, name="retention_runs"),
]
