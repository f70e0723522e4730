"""Our own exceptions: one root, a small tree below it."""


class TaskServiceError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigurationError(TaskServiceError):
    """A setting is missing or invalid; the message is one line naming the variable."""


class SchemaOutdated(ConfigurationError):
    """The database answered, but its schema is not at the revision this code needs; the
    message is one line naming `make migrate`. A service refuses to start on it: every
    statement would fail on a missing column or table."""


class TaskNotFound(TaskServiceError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} does not exist")
        self.task_id = task_id


class DependencyUnavailable(TaskServiceError):
    """A backing service did not answer; the caller may try again later."""

    component = "dependency"


class DatabaseUnavailable(DependencyUnavailable):
    component = "database"


class DatabaseRefused(DatabaseUnavailable):
    """The database answered but refused the statement (a constraint, data it cannot store, a
    schema or grant that does not match the code). Still "unavailable" to the caller, who can
    do nothing about it; it is logged as an error for whoever runs the deployment."""


class BrokerUnavailable(DependencyUnavailable):
    component = "broker"


class InvalidTaskMessage(TaskServiceError):
    """A queue message that can never be processed (not JSON, no valid task_id)."""


class TaskNotFailed(TaskServiceError):
    """Only a FAILED task can be re-driven."""

    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(f"task {task_id} is {status}; only a FAILED task can be retried")
        self.task_id = task_id
        self.status = status


class TaskNotCancellable(TaskServiceError):
    """A final task cannot be cancelled."""

    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(
            f"task {task_id} is {status}; only a PENDING or PROCESSING task can be cancelled"
        )
        self.task_id = task_id
        self.status = status


class TooMuchWaiting(TaskServiceError):
    """New submissions are refused while more than MAX_BACKLOG tasks wait (backpressure)."""

    def __init__(self, waiting: int, limit: int) -> None:
        super().__init__(
            f"{waiting:,} tasks wait already, more than MAX_BACKLOG ({limit:,}); try again later."
        )


class IdempotencyKeyReused(TaskServiceError):
    """The Idempotency-Key was first sent with another request body."""

    def __init__(self, key: str) -> None:
        super().__init__("this Idempotency-Key was already used with a different request body")
        self.key = key
