"""hostmesh: node agent, API client and DNS reconciler of hostmesh.cluster."""

__version__ = "0.1.0"
