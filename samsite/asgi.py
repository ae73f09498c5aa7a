"""ASGI entry point (daphne or uvicorn). SSE streams are ordinary Django HTTP responses routed here."""

import os

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "samsite.settings")
django_asgi_app = get_asgi_application()

from samsite.asgi_limits import BodySizeLimitMiddleware  # noqa: E402

# Oversize bodies are refused before Django reads (and spools) them.
application = ProtocolTypeRouter({"http": BodySizeLimitMiddleware(django_asgi_app)})

# The embedded job runner (JOB_RUNNER=embedded) starts with the server: it resumes orphaned and queued jobs.
from datasets.jobs.runners import start_server_runner  # noqa: E402

start_server_runner()

# The model loads in the background (SAM_PRELOAD), so the first request does not wait for it.
from datasets.segmentation import start_preload  # noqa: E402

start_preload()
