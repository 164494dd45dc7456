from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from portal import health, prometheus, views
from portal.login_throttle import ThrottledAdminAuthenticationForm, ThrottledAuthenticationForm, throttled_status

admin.site.login_form = ThrottledAdminAuthenticationForm


class FaviconRedirect(RedirectView):
    """The static URL is resolved per request: at import time a production manifest may not be readable yet
    (``check --deploy`` imports the URLs before ``collectstatic``)."""

    permanent = True

    def get_redirect_url(self, *args, **kwargs):
        return static("portal/favicon.svg")

urlpatterns = [
    path("", views.home, name="home"),
    # each dependency's status, for load balancers (no sign-in; no secrets in the body)
    path("healthz", health.healthz, name="healthz"),
    # browsers ask for /favicon.ico on pages that name no icon (the Django admin's): answer with ours, not a 404
    path("favicon.ico", FaviconRedirect.as_view()),
    path("accounts/login/", throttled_status(auth_views.LoginView.as_view(
        template_name="portal/login.html", authentication_form=ThrottledAuthenticationForm)), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("audit/", views.audit_log, name="audit_log"),
    path("account/tokens/", views.api_tokens, name="api_tokens"),
    path("account/tokens/<int:token_id>/revoke/", views.api_token_revoke, name="api_token_revoke"),
    # the admin's own sign-in page, throttled like the portal's (admin.site.login_form above)
    path("admin/login/", throttled_status(admin.site.login), name="admin_login"),
    path("admin/", admin.site.urls),
    path("analytics/", include("warehouse.urls")),
    path("quality/", include("quality.urls")),
    path("deletions/", include("deletion.urls")),
    path("privacy/retention/", include("deletion.retention_urls")),
    path("", include("contracts.urls")),
    path("", include("ingest_workers.urls")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    # the split view serves Swagger UI's start-up script as a file (Content-Security-Policy: script-src 'self')
    path("api/v1/docs/", SpectacularSwaggerSplitView.as_view(url_name="api_schema"), name="api_docs"),
    path("api/v1/", include("contracts.api_urls")),
    path("api/v1/", include("warehouse.api_urls")),
    path("api/v1/", include("deletion.api_urls")),
    path("registry/", include("contracts.registry_urls")),
    path("collect/v1/", include("ingest_workers.collector_urls")),
    # Prometheus text format; loopback or METRICS_TOKEN (portal.prometheus, docs/metrics.md)
    path("metrics", prometheus.metrics, name="prometheus_metrics"),
]
