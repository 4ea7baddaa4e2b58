"""The Llama Fed app."""

from django.apps import AppConfig


class PolicyConfig(AppConfig):
    """Policy app: the Fed process and its bootstrap."""

    name = "policy"
