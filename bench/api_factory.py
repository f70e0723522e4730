"""`uvicorn bench.api_factory:app --factory --workers N`: the API in N processes.

`main.py` runs one process; this builds the same app and logging from the same settings for
uvicorn's own multi-process supervisor. It needs api-service/src on PYTHONPATH.
"""

from __future__ import annotations

import importlib

from fastapi import FastAPI

from common.logs import configure_logging
from common.settings import load_settings


def app() -> FastAPI:
    settings = load_settings()
    configure_logging(service="api", level=settings.log_level, fmt=settings.log_format)
    # Imported by name: api-service/src is on PYTHONPATH only when uvicorn runs this.
    main = importlib.import_module("main")
    application: FastAPI = main.create_app(settings)
    return application
