"""The AO runtime as a Django app (its tables); the pure parts live in ao.permaweb and ao.units."""

from django.apps import AppConfig


class AoConfig(AppConfig):
    """AO runtime app."""

    name = "ao"
    verbose_name = "AO runtime"
