import json

from django.db import migrations, models


def fill_normalized_fingerprints(apps, schema_editor):
    # The live function on purpose: registrations compare its output from now on.
    from contracts.services import schema_normalized_fingerprint

    SchemaText = apps.get_model("contracts", "SchemaText")
    for row in SchemaText.objects.filter(normalized_fingerprint="").iterator():
        # json, not orjson: a custom property may hold an integer wider than 64 bits.
        row.normalized_fingerprint = schema_normalized_fingerprint(json.loads(row.schema))
        row.save(update_fields=["normalized_fingerprint"])


class Migration(migrations.Migration):

    dependencies = [
        ("contracts", "0004_source_previous_write_key_prefix"),
    ]

    operations = [
        migrations.AddField(
            model_name="schematext",
            name="normalized_fingerprint",
            field=models.CharField(db_index=True, default="", max_length=64),
        ),
        migrations.RunPython(fill_normalized_fingerprints, migrations.RunPython.noop),
    ]
