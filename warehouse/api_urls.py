"""REST API v1 of the curated models (mounted at /api/v1/ by portal/urls.py)."""

from django.urls import path

from warehouse import apis

urlpatterns = [
    path("prices/", apis.PriceListApi.as_view(), name="api_prices"),
    path("prices/recompute/", apis.PriceRecomputeApi.as_view(), name="api_price_recompute"),
    path("model-runs/", apis.ModelRunListApi.as_view(), name="api_model_runs"),
]
