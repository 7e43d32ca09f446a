from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("culprit")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
@signals.before_task_publish.connect
def ensure_broker_folders(**_: Any) -> None:
    """The embedded broker is a pair of folders; they are made when first needed, not when settings are read (a
    build step that only reads settings leaves the disk alone)."""
    options = app.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)
