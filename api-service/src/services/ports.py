"""What the use cases need from the outside, besides the TaskRepository in `common.tasks`."""

from __future__ import annotations

from typing import Protocol

from common.messages import TaskMessage


class TaskPublisher(Protocol):
    async def publish(self, message: TaskMessage) -> None:
        """Hand one message to the broker; raises BrokerUnavailable unless it is confirmed."""
        ...

    @property
    def is_open(self) -> bool: ...
