"""Helpers the test suites share: scratch databases and vhosts, real service processes, polling."""
