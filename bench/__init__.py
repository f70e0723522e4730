"""The benchmark suite: `make bench` (or `python -m bench`) and `make bench-smoke`.

It starts what it measures (the API with one and with two uvicorn processes, the worker, a
hello-world FastAPI app, a Celery and a Dramatiq peer) against the local MariaDB and RabbitMQ,
in a database and vhost of its own, drives them with wrk and a paced load generator, stops
them, and prints one table (written to docs/benchmarks.md by a full run).
"""
