"""The dashboard driven in a browser (see conftest.py)."""
