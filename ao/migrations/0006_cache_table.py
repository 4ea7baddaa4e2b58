"""The database cache's table (settings.CACHES on the embedded default): made by `migrate`, so no extra step."""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps: object, schema_editor: object) -> None:
    """createcachetable for the database being migrated; a no-op when the cache is Redis or the table exists."""
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("ao", "0005_result_origins")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
