"""The web app: what petitioners and the public see of the Llama Fed."""

from django.apps import AppConfig


class WebConfig(AppConfig):
    """Web app."""

    name = "web"
    verbose_name = "Llama Fed site"

    def ready(self) -> None:
        """The read models follow the Fed's log as the compute unit commits it (ao knows nothing of them)."""
        from ao.dispatch import results_committed
        from web import projection

        results_committed.connect(projection.follow, dispatch_uid="web.projection.follow")
