"""hostmesh node agent (primary or secondary); see README.md in this directory.

Run with `hostmesh agent [--env-file FILE]`; configuration comes from the
environment variables documented in README.md.
"""
