"""Quality pages, mounted at /quality/ by portal/urls.py."""

from django.urls import path

from quality import views

urlpatterns = [
    path("", views.quality_overview, name="quality_overview"),
    path("run/", views.quality_run_now, name="quality_run_now"),
    path("tables/<str:table>/", views.quality_table, name="quality_table"),
    path("scorecards/", views.quality_scorecards, name="quality_scorecards"),
    path("scorecards/<str:kind>/<path:subject>/", views.quality_scorecard, name="quality_scorecard"),
    path("tables/<str:table>/contract.yml", views.quality_contract_yaml, name="quality_contract_yaml"),
]
