"""The MySQL adapter: the only code that imports asyncmy.

    database = Database(settings)          # made anywhere; `await database.start()` opens it
    repository = grouped_repository(database)

Every driver failure leaves this package as DatabaseUnavailable or DatabaseRefused
(common.mysql.errors); grouping concurrent callers into one statement is private to it.
"""

from common.mysql.connection import Database
from common.mysql.grouped import GroupedTaskRepository
from common.mysql.repository import MySQLTaskRepository


def grouped_repository(database: Database) -> GroupedTaskRepository:
    """The TaskRepository the services use: the hot statements shared between callers."""
    return GroupedTaskRepository(MySQLTaskRepository(database), timeout=database.timeout)


__all__ = ["Database", "GroupedTaskRepository", "MySQLTaskRepository", "grouped_repository"]
