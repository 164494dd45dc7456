from django.apps import AppConfig


class DeletionConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "deletion"
    verbose_name = "Deletion and retention"
