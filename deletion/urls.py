"""Deletion pages, mounted at /deletions/ by portal/urls.py."""

from django.urls import path

from deletion import views

urlpatterns = [
    path("", views.deletion_list, name="deletion_list"),
    path("new/", views.deletion_file, name="deletion_file"),
    path("<int:pk>/", views.deletion_ticket, name="deletion_ticket"),
    path("<int:pk>/progress/", views.deletion_ticket_progress, name="deletion_ticket_progress"),
    path("<int:pk>/evidence/", views.deletion_evidence, name="deletion_evidence"),
    path("<int:pk>/<str:action>/", views.deletion_ticket_action, name="deletion_ticket_action"),
]
