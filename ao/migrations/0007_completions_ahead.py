"""LLM completions computed ahead by any worker (ao.extensions.llm_ahead)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("ao", "0006_cache_table")]

    operations = [
        migrations.CreateModel(
            name="Completion",
            fields=[
                ("key", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("process_id", models.CharField(help_text="the process whose message asked for it ahead",
                                                max_length=43)),
                ("nonce", models.BigIntegerField(help_text="the message that asked for it ahead")),
                ("model_id", models.CharField(max_length=43)),
                ("model_sha256", models.CharField(max_length=64)),
                ("request", models.JSONField(help_text="prefix, parts, grammar, max_tokens")),
                ("state", models.CharField(choices=[("pending", "waiting for a worker"),
                                                    ("claimed", "a worker computes it"), ("done", "computed")],
                                           default="pending", max_length=8)),
                ("claimed_by", models.CharField(blank=True, max_length=64)),
                ("claimed_until", models.DateTimeField(null=True)),
                ("output", models.JSONField(help_text="the completion, once computed", null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"indexes": [models.Index(fields=["state", "created_at"], name="completion_state_age")]},
        ),
    ]
