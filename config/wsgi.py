from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()
# Load the URLconf and every view module behind it now, when the server starts (before it forks its workers with
# --preload), rather than on each worker's first request: that request used to take ~1 s longer than the rest, which
# an OTLP exporter with a short timeout counts as a failure. A broken URLconf now stops the server at start.
get_resolver().url_patterns  # noqa: B018 - reading it is what imports the views
