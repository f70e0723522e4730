"""The task types' handlers: the module `handlers.<type>` has `async def handle(ctx)` for
each type of the catalogue (common.task_types) that this worker can run."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping

from handlers.context import Handler

logger = logging.getLogger(__name__)


def load_handlers(type_names: Iterable[str]) -> Mapping[str, Handler]:
    """The handler of each type that has one; a type without its module is left out (this
    worker sends its tasks on to another one)."""
    found: dict[str, Handler] = {}
    for name in type_names:
        try:
            module = importlib.import_module(f"handlers.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"handlers.{name}":
                raise  # the module exists but one of its imports does not
            logger.warning("no handler for task type", extra={"type": name})
            continue
        found[name] = module.handle
    return found
