from django.apps import AppConfig


class FrontendConfig(AppConfig):
    name = "frontend"
    verbose_name = "Web UI"

    def ready(self) -> None:
        from datasets.jobs.signals import job_event
        from frontend.live import on_job_event

        job_event.connect(on_job_event, dispatch_uid="frontend.live.on_job_event")
