"""Portal pages of the curated models, mounted at /analytics/ by portal/urls.py."""

from django.urls import path

from warehouse import dashboard_views, views

urlpatterns = [
    path("prices/", views.prices, name="analytics_prices"),
    path("prices/add/", views.price_add, name="analytics_price_add"),
    path("prices/recompute/", views.price_recompute, name="analytics_recompute"),
    path("runs/", views.runs, name="analytics_runs"),
    # dashboard routes (warehouse/dashboard_views.py)
    path("", dashboard_views.analytics_dashboard, name="analytics_dashboard"),
    path("data.json", dashboard_views.analytics_dashboard_data, name="analytics_dashboard_data"),
]
