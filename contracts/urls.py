"""Portal pages for sources, contracts, versions, review and the canonical model (mounted at the root)."""

from django.urls import path

from contracts import views

urlpatterns = [
    path("sources/", views.source_list, name="source_list"),
    path("sources/new/", views.source_create, name="source_create"),
    path("sources/<slug:name>/", views.source_detail, name="source_detail"),
    path("sources/<slug:name>/rotate-key/", views.source_rotate_key, name="source_rotate_key"),
    path("sources/<slug:name>/active/", views.source_set_active, name="source_set_active"),
    path("sources/<slug:name>/signing-secret/", views.source_signing_secret, name="source_signing_secret"),
    path("contracts/", views.contract_list, name="contract_list"),
    path("contracts/new/", views.contract_create, name="contract_create"),
    path("contracts/<str:subject>/", views.contract_detail, name="contract_detail"),
    path("contracts/<str:subject>/compatibility/", views.contract_compatibility,
         name="contract_compatibility"),
    path("contracts/<str:subject>/check/", views.version_check, name="version_check"),
    path("contracts/<str:subject>/versions/new/", views.version_create, name="version_create"),
    path("contracts/<str:subject>/versions/<int:number>/", views.version_detail, name="version_detail"),
    path("contracts/<str:subject>/versions/<int:number>/submit/", views.version_submit,
         name="version_submit"),
    path("review/", views.review_queue, name="review_queue"),
    path("review/<str:subject>/<int:number>/", views.review_detail, name="review_detail"),
    path("canonical/", views.canonical_model_browser, name="canonical_model"),
]
