"""The hello-world baseline: `uvicorn bench.hello:app`, one POST route answering 202.

It measures what FastAPI and uvicorn cost on this machine before any work is done.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.post("/api/tasks", status_code=202)
async def create_task() -> dict[str, str]:
    return {"task_id": "00000000-0000-4000-8000-000000000000", "status": "PENDING"}
