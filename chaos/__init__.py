"""`make chaos`: a fault-injection run that checks no accepted task is lost or run twice."""
