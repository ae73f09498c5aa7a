"""WSGI entry point. Live progress (SSE) needs ASGI: prefer samsite.asgi in deployment."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "samsite.settings")
application = get_wsgi_application()

# The model loads in the background (SAM_PRELOAD), so the first request does not wait for it.
from datasets.segmentation import start_preload  # noqa: E402

start_preload()
