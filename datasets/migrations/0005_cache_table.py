"""The database cache table (throttle counters, login lockouts) comes with ``migrate``.

Django's ``createcachetable`` makes the table of every DatabaseCache in CACHES and skips tables that exist,
so this is idempotent and harmless when CACHES is Redis (no database cache: nothing to create). Reversing
it leaves the table: other code may still be using it, and it holds nothing that must outlive a rollback.
"""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("datasets", "0004_variant_annotations_flags")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop, elidable=False)]
