from django.urls import path

from contracts import apis, cli_apis

urlpatterns = [
    path("sources/", apis.SourceListApi.as_view(), name="api_sources"),
    path("sources/<str:source>/", apis.SourceDetailApi.as_view(), name="api_source"),
    path("sources/<str:source>/rotate-key", apis.SourceRotateKeyApi.as_view(), name="api_source_rotate_key"),
    path("sources/<str:source>/signing-secret", apis.SourceSigningSecretApi.as_view(),
         name="api_source_signing_secret"),
    path("contracts/", apis.ContractListApi.as_view(), name="api_contracts"),
    path("contracts/<str:subject>/", apis.ContractDetailApi.as_view(), name="api_contract"),
    path("contracts/<str:subject>/check", apis.ContractCheckApi.as_view(), name="api_contract_check"),
    path("contracts/<str:subject>/versions/", apis.VersionListApi.as_view(), name="api_versions"),
    path("contracts/<str:subject>/versions/<str:version>/", apis.VersionDetailApi.as_view(), name="api_version"),
    *[
        path(f"contracts/<str:subject>/versions/<str:version>/{action}",
             apis.VERSION_ACTION_APIS[action].as_view(), name=f"api_version_{action}")
        for action in ("submit", "approve", "reject", "deprecate")
    ],
    path("review-queue/", apis.ReviewQueueApi.as_view(), name="api_review_queue"),
    path("canonical/", apis.CanonicalModelApi.as_view(), name="api_canonical"),
    path("audit/", apis.AuditListApi.as_view(), name="api_audit"),
    path(f"cli/{cli_apis.CLI_FILENAME}", cli_apis.CliDownloadApi.as_view(), name="api_cli_download"),
]
