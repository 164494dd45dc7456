"""Webhook sources no longer have a write key: their events are always signed by the provider. Keys
issued to them before are withdrawn (the batch collector refuses webhook sources in any case)."""

from django.db import migrations


def withdraw_webhook_write_keys(apps, schema_editor):
    Source = apps.get_model("contracts", "Source")
    Source.objects.filter(kind="webhook").exclude(write_key_hash="").update(
        write_key_prefix="", write_key_hash="", write_key_rotated_at=None)


class Migration(migrations.Migration):
    dependencies = [("contracts", "0002_version_submitted_by")]
    operations = [migrations.RunPython(withdraw_webhook_write_keys, migrations.RunPython.noop)]
