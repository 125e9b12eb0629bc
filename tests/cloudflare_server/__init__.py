"""A local server speaking the Cloudflare v4 API, for tests and the lab.

Not part of the shipped collection. See ``app.py`` for what it implements and
``__main__.py`` for how to start it (``python -m tests.cloudflare_server``).
"""
