"""Make the collection importable by its FQCN path in every test.

The plugins import the agent API client and the DNS reconciler from
``ansible_collections.hostmesh.cluster.plugins.module_utils``; tests that
raise or catch those classes must import them by the same name, or they get a
second copy of each class.
"""

import sys
from pathlib import Path

COLLECTIONS = str(Path(__file__).resolve().parents[1] / "collections")
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

# Ansible's collection finder, installed once before any test module imports
# ansible_collections.*: installing it after some of them were imported the
# plain way leaves the collection without its metadata.
from ansible.plugins.loader import init_plugin_loader

init_plugin_loader([COLLECTIONS])
