"""WSGI entry point. Live progress (SSE) needs ASGI: prefer samsite.asgi in deployment."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "samsite.settings")
application = get_wsgi_application()
