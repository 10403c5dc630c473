from django.apps import AppConfig


class WebConfig(AppConfig):
    """The pages people open on the wedding day: sign-in, their weddings, the wedding-day page."""

    name = "web"
    verbose_name = "Wedding-day pages"
