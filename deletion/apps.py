from django.apps import AppConfig


class DeletionConfig(AppConfig):
    name = "deletion"
    verbose_name = "Deletion: erasure requests, crypto-shredding, suppression"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from deletion.selectors import requests_at_risk_samples
        from ingest_workers.metric_providers import state_gauge_provide

        # /metrics reads the SLA states at scrape time (docs/metrics.md; the alert in docs/ops/prometheus-alerts.yml)
        state_gauge_provide("chatorbit_deletion_requests_at_risk",
                            "Deletion requests not done with under 24 hours of their SLA left (at_risk) or past "
                            "their due time (overdue).", ("state",), requests_at_risk_samples)
