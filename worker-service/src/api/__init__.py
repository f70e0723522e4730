"""The worker's own small HTTP port (WORKER_HEALTH_PORT): HTTP in, use case calls, HTTP out.

`app.RouteTable` is the ASGI app (a table of paths), `health` its two routes and `server` what
serves it with uvicorn inside the worker's event loop.
"""
