from django.apps import AppConfig


class WedsyncConfig(AppConfig):
    name = "wedsync"
    verbose_name = "Weddings"

    def ready(self) -> None:
        from wedsync import access_revocation  # noqa: F401  (connects the revocation receivers)
        from wedsync.api import schema  # noqa: F401  (registers the OpenAPI auth extension)
