"""Registry values that hold templates with filters, through the real ansible-playbook.

With ansible-core 2.19 a filter plugin receives the registry as lazy containers: a
value such as `image: "{{ gateway | regex_replace(...) }}:5000/app:1"` is templated
when it is read. A deep copy of such a container copies its template engine too, and
the copy's filters fail to load ("The filter plugin 'regex_replace' failed to load:
'dict' object is not callable", ansible/ansible#85773). The apps planner once did
that (copy.deepcopy of each container); these tests run the planner and every apps
filter the role uses on such a registry. Localhost only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "inventory"))
from livecluster import ansible_env, run

ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")

# Every container setting the planner copies holds a filter, and `replicas` makes
# the planner build its own copy of the entry first (as the lab's registry does).
VARS = r"""
gateway: "{{ '10.9.8.7' | regex_replace('\\.[0-9]+$', '.1') }}"
hostmesh_services:
  web:
    hosts: ["{{ 'WEB.test' | lower }}"]
    port: 8082
    replicas: 2
    container:
      image: "{{ gateway }}:5000/hostmesh/whoami:{{ '1' | regex_replace('1', '2') }}"
      port: 8080
      command: ["--name", "{{ 'web' | upper }}"]
      env:
        GREETING: "{{ 'hello' | regex_replace('h', 'j') }}"
      volumes: ["{{ 'data' | regex_replace('d', 'D') }}:/srv"]
      healthcheck:
        test: ["CMD", "{{ '/health' | regex_replace('^/', '/x') }}"]
"""

# A filter plugin of this test: calls the planner directly on what Ansible hands a
# filter, before anything else has read the values.
PLANNER_FILTER = """
from ansible_collections.hostmesh.cluster.plugins.module_utils._apps_validate import app_plan


class FilterModule:
    def filters(self):
        return {"plan_first": lambda services, nodes: app_plan(services, nodes)}
"""

PLAYBOOK = """
- name: The apps filters on a registry with templated values
  hosts: localhost
  gather_facts: false
  vars_files: [vars.yml]
  tasks:
    - name: Write what each filter returns
      ansible.builtin.copy:
        content: "{{ out | to_json }}"
        dest: "{{ out_dir }}/out.json"
        mode: "0644"
      vars:
        nodes: [node1, node2, node3]
        out:
          direct: "{{ hostmesh_services | plan_first(nodes) }}"
          errors: "{{ hostmesh_services | hostmesh.cluster.apps_errors(nodes, [22]) }}"
          plan: "{{ hostmesh_services | hostmesh.cluster.apps_plan(nodes) }}"
          routing: "{{ hostmesh_services | hostmesh.cluster.apps_routing(nodes, [['web'], [], ['web']]) }}"
"""


def test_templated_registry_values_are_planned_and_routed(tmp_path):
    (tmp_path / "vars.yml").write_text(VARS)
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "filter_plugins").mkdir()
    (tmp_path / "filter_plugins" / "plan_first.py").write_text(PLANNER_FILTER)
    proc = run(
        [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"),
         "-e", f"out_dir={tmp_path}", "-e", f"ansible_python_interpreter={sys.executable}"],
        ansible_env(ANSIBLE_FILTER_PLUGINS=str(tmp_path / "filter_plugins")),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = json.loads((tmp_path / "out.json").read_text())

    assert out["errors"] == []
    for plan in (out["direct"], out["plan"]):
        ctr = plan["web"]["container"]
        assert ctr["image"] == "10.9.8.1:5000/hostmesh/whoami:2"
        assert ctr["command"] == ["--name", "WEB"]
        assert ctr["env"] == {"GREETING": "jello"}
        assert ctr["mounts"] == ["hostmesh-web-Data:/srv"]
        assert ctr["healthcheck"] == {"test": ["CMD", "/xhealth"]}
        assert len(plan["web"]["nodes"]) == 2
    web = out["routing"]["web"]
    assert web["nodes"] == ["node1", "node3"]
    assert web["hosts"] == ["web.test"]
    assert web["container"]["image"] == "10.9.8.1:5000/hostmesh/whoami:2"
