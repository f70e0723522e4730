"""Every failure of the MySQL driver, translated into ours at the adapter's boundary.

An error the server sent about the statement itself (a constraint, data it cannot store, an
unknown column, a missing grant) is DatabaseRefused: a fault of the deployment, logged as an
error for whoever runs it. Everything else (no answer in time, a refused, closed or reset
connection, and whatever the driver raises on a broken stream) is DatabaseUnavailable: not
now, try again later. No caller ever sees an asyncmy exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from asyncmy.errors import DatabaseError, MySQLError

from common.errors import DatabaseRefused, DatabaseUnavailable, TaskServiceError

logger = logging.getLogger(__name__)

# Server errors that mean "not now" (too many connections, shutting down, lock wait timeout,
# deadlock, connection killed, idle disconnect); client errors (2000-2999) are all of that kind.
_TRANSIENT_SERVER_ERRORS = frozenset({1040, 1053, 1205, 1213, 1927, 4031})
DEADLOCK = 1213


def server_error_code(exc: BaseException) -> int | None:
    """The MySQL error number of an error the server (or the client library) reported."""
    if isinstance(exc, MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def translate(exc: Exception, *, timeout: float) -> DatabaseUnavailable:
    if isinstance(exc, TimeoutError):
        return DatabaseUnavailable(f"MySQL did not answer within {timeout:g} s")
    code = server_error_code(exc)
    if isinstance(exc, DatabaseError) and code is not None and _about_the_statement(code):
        logger.error("database refused the statement", extra={"code": code, "error": str(exc)})
        return DatabaseRefused(f"MySQL: {exc!r}")
    if not isinstance(exc, MySQLError | OSError):
        # Not a failure the driver names (seen: RuntimeError from a connection closed during
        # its handshake); the connection is unusable all the same.
        logger.warning("database driver failed", extra={"error": repr(exc)}, exc_info=exc)
    return DatabaseUnavailable(f"MySQL: {exc!r}")


def _about_the_statement(code: int) -> bool:
    """A server error about the statement, not a client-side or a passing one."""
    return code >= 1000 and not 2000 <= code < 3000 and code not in _TRANSIENT_SERVER_ERRORS


@contextlib.contextmanager
def translated(*, timeout: float) -> Iterator[None]:
    """Our own errors pass through; any other Exception becomes DatabaseUnavailable (or
    DatabaseRefused), with the driver's exception as its cause."""
    try:
        yield
    except TaskServiceError:
        raise
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise  # this task is being cancelled: let it stop
        # A batch's future, cancelled because the task writing it was.
        raise DatabaseUnavailable("MySQL: the statement was cancelled") from None
    except Exception as exc:
        raise translate(exc, timeout=timeout) from exc


def is_deadlock(exc: DatabaseUnavailable) -> bool:
    return server_error_code(exc.__cause__ or exc) == DEADLOCK
