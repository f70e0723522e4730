"""The init container of the API, worker and webhook sender pods (deploy/k8s): wait until the
database schema is at the revision this image's code needs, then exit 0.

So a pod's service starts once the migration Job has brought the schema there, and not before.
The services check the revision themselves at start and exit on any other (common.mysql.revision),
which in a pod is a restart loop with a back-off growing to five minutes; waiting here lets the
service start within one poll of the migration's end. The image's own `common` says which
revision that is, so an image and the schema it needs cannot disagree.

Mounted from the ConfigMap task-service-scripts and run with the image's Python, configured as
the service is (DATABASE_URL and the ConfigMap):  python /opt/task-service/wait_for_schema.py
"""

from __future__ import annotations

import asyncio
import logging
import sys

from common.errors import ConfigurationError, DatabaseUnavailable
from common.logs import configure_logging
from common.mysql import Database
from common.mysql.revision import SCHEMA_REVISION, database_revision
from common.settings import Settings, load_settings

logger = logging.getLogger("wait-for-schema")

POLL_SECONDS = 2.0


async def wait_for_schema(settings: Settings, *, poll_seconds: float = POLL_SECONDS) -> None:
    """Return once the database answers at SCHEMA_REVISION; until then, log what it answers
    (another revision, none, or nothing) at each poll."""
    database = Database(settings)
    await database.start()
    try:
        while (found := await _revision(database)) != SCHEMA_REVISION:
            logger.info("waiting for the schema", extra={"needs": SCHEMA_REVISION, "found": found})
            await asyncio.sleep(poll_seconds)
    finally:
        await database.close()
    logger.info("schema at the revision this image needs", extra={"revision": SCHEMA_REVISION})


async def _revision(database: Database) -> str:
    try:
        return await database_revision(database) or "no revision"
    except DatabaseUnavailable as exc:
        return f"database unavailable: {exc}"


def main() -> None:
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        sys.exit(f"wait-for-schema: {exc}")
    configure_logging(service="wait-for-schema", level=settings.log_level, fmt=settings.log_format)
    asyncio.run(wait_for_schema(settings))


if __name__ == "__main__":
    main()
