from django.apps import AppConfig


class IngestWorkersConfig(AppConfig):
    name = "ingest_workers"
    verbose_name = "Ingestion: collectors, stream consumers, archive and quarantine"
