from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from monitoring import (
            access,  # noqa: F401  (registers the deploy check on METRICS_TOKEN)
            tasks,  # noqa: F401  (registers the Celery tasks that services queue by name)
        )
