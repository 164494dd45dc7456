"""The Django project: settings, URLs, Celery app, sign-in, teams, API tokens and the audit log."""
from portal.celery import app as celery_app

__all__ = ("celery_app",)
