"""ASGI entry point: ``uvicorn webapp.asgi:application``."""

import os

from django.core.asgi import get_asgi_application

from webapp.body_limit import BodyLimitASGI

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
# The wrapper caps chunked bodies, which Django's ASGI handler would otherwise spool
# whole (to memory, then disk) before any middleware could refuse them.
application = BodyLimitASGI(get_asgi_application())
