"""The web app: what petitioners and the public see of the Llama Fed."""

from django.apps import AppConfig


class WebConfig(AppConfig):
    """Web app."""

    name = "web"
    verbose_name = "Llama Fed site"
