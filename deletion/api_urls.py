"""REST API v1 of deletion tickets (mounted at /api/v1/ by portal/urls.py)."""

from django.urls import path

from deletion import apis

urlpatterns = [
    path("deletion-tickets/", apis.TicketFileApi.as_view(), name="api_deletion_file"),
    path("deletion-tickets/<str:pk>/", apis.TicketApi.as_view(), name="api_deletion_ticket"),
    path("deletion-tickets/<str:pk>/confirm/", apis.TicketConfirmApi.as_view(), name="api_deletion_confirm"),
    path("deletion-tickets/<str:pk>/evidence/", apis.TicketEvidenceApi.as_view(), name="api_deletion_evidence"),
]
