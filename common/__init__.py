"""Code shared by the API and the worker: settings, the tasks table, the message, the broker."""
