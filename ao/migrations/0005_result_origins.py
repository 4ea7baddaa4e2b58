"""Results say which outbox entry a genuine push carried (accepted once) and the Pushed-For their pushes name."""

from django.db import migrations, models


def fill_pushed_for(apps, schema_editor):
    """Results recorded before this migration: their pushes' rows know the Pushed-For."""
    Push = apps.get_model("ao", "Push")
    Result = apps.get_model("ao", "Result")
    seen = set()
    for process_id, nonce, pushed_for in Push.objects.exclude(pushed_for="").values_list(
            "process_id", "nonce", "pushed_for").iterator():
        if (process_id, nonce) not in seen:
            seen.add((process_id, nonce))
            Result.objects.filter(process_id=process_id, nonce=nonce).update(pushed_for=pushed_for)


class Migration(migrations.Migration):
    dependencies = [("ao", "0004_compute_leases")]

    operations = [
        migrations.AddField(
            model_name="result", name="pushed_for",
            field=models.CharField(blank=True, max_length=43,
                                   help_text="the root message its outbox's pushes name (Pushed-For); blank if none"),
        ),
        migrations.AddField(
            model_name="result", name="origin",
            field=models.CharField(blank=True, max_length=140,
                                   help_text="for a genuine push: the outbox entry it carries (process/nonce/index)"),
        ),
        migrations.AddConstraint(
            model_name="result",
            constraint=models.UniqueConstraint(condition=~models.Q(origin=""), fields=("process", "origin"),
                                               name="result_origin_once"),
        ),
        migrations.RunPython(fill_pushed_for, migrations.RunPython.noop),
    ]
