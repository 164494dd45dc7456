from django.apps import AppConfig


class DeletionConfig(AppConfig):
    name = "deletion"
    verbose_name = "Deletion: erasure requests, crypto-shredding, suppression"
    default_auto_field = "django.db.models.BigAutoField"
