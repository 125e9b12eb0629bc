"""hostmesh.cluster.prometheus: what its templates render to, with Ansible's own
templating (the same filters and trim_blocks as the template module).

The lab drill (tests/integration/site/test_site_prometheus.py) runs the files
through promtool and amtool on a real primary; these checks pin what the
files say: one target per node on its mesh address, each agent in its own job
with its own node's token file (never a token shared between nodes),
Prometheus' own {{ $labels }} left intact, a webhook only when one is given,
listening on loopback.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "prometheus"
TARGETS = [
    {"name": "node1", "agent": "10.50.0.1", "traefik": "10.50.0.1"},
    {"name": "node2", "agent": "10.50.0.2", "traefik": "10.50.0.2"},
    {"name": "node3", "agent": "10.50.0.3", "traefik": "10.50.0.33"},
]


def render(name: str, **overrides) -> str:
    # role defaults are templates themselves (as Ansible trusts them)
    defaults = {
        key: trust_as_template(value) if isinstance(value, str) else value
        for key, value in yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()).items()
    }
    variables = {
        **defaults,
        "inventory_dir": "/inv",
        "ansible_managed": "Ansible managed",
        "_prometheus_targets": TARGETS,
        "groups": {"hostmesh_primary": ["node1"]},
        "hostmesh_cluster_name": "lab",
        **overrides,
    }
    templar = Templar(loader=DataLoader(), variables=variables)
    source = trust_as_template((ROLE / "templates" / name).read_text())
    return templar.template(source, overrides={"trim_blocks": True})


def agent_jobs(config: dict) -> list[dict]:
    return [job for job in config["scrape_configs"]
            if job["job_name"] not in ("traefik", "hostmesh_agent_discovered")]


def job(config: dict, name: str) -> dict:
    (found,) = [j for j in config["scrape_configs"] if j["job_name"] == name]
    return found


def test_every_agent_is_scraped_with_its_own_nodes_token_file_only():
    config = yaml.safe_load(render("prometheus.yml.j2"))
    agents = agent_jobs(config)
    # one job per agent: Prometheus sends each token to its own node alone
    assert [job["job_name"] for job in agents] == [
        "hostmesh_agent_node1",
        "hostmesh_agent_node2",
        "hostmesh_agent_node3",
    ]
    scraped = {}
    for job in agents:
        (static,) = job["static_configs"]
        node = static["labels"]["instance"]
        assert static["labels"] == {"job": "hostmesh_agent", "instance": node}
        assert job["authorization"] == {
            "type": "Bearer",
            "credentials_file": f"/etc/prometheus/hostmesh-metrics-token-{node}",
        }
        assert job["job_name"] == f"hostmesh_agent_{node}"
        scraped[node] = static["targets"]
    assert scraped == {
        "node1": ["10.50.0.1:8080"],
        "node2": ["10.50.0.2:8080"],
        "node3": ["10.50.0.3:8080"],
    }
    files = [job["authorization"]["credentials_file"] for job in agents]
    assert len(set(files)) == len(files) == len(TARGETS)


def test_traefik_is_scraped_on_its_mesh_address_without_a_token():
    config = yaml.safe_load(render("prometheus.yml.j2"))
    (traefik,) = [job for job in config["scrape_configs"] if job["job_name"] == "traefik"]
    targets = {sc["labels"]["instance"]: sc["targets"] for sc in traefik["static_configs"]}
    # traefik_mesh_address wins for Traefik
    assert targets == {
        "node1": ["10.50.0.1:8090"],
        "node2": ["10.50.0.2:8090"],
        "node3": ["10.50.0.33:8090"],
    }
    assert "authorization" not in traefik
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "127.0.0.1:9093"
    ]
    assert config["rule_files"] == ["/etc/prometheus/hostmesh-rules.yml"]
    assert config["global"]["external_labels"] == {"cluster": "lab"}


def test_traefik_scraping_can_be_left_out_and_ports_follow_the_other_roles():
    config = yaml.safe_load(
        render(
            "prometheus.yml.j2",
            prometheus_scrape_traefik=False,
            prometheus_agent_port=9999,
            prometheus_credentials_prefix="/srv/tokens/m-",
        )
    )
    assert len(config["scrape_configs"]) == len(TARGETS) + 1  # + hostmesh_agent_discovered
    assert all(job["job_name"].startswith("hostmesh_agent_") for job in config["scrape_configs"])
    first = config["scrape_configs"][0]
    assert first["static_configs"][0]["targets"] == ["10.50.0.1:9999"]
    assert first["authorization"]["credentials_file"] == "/srv/tokens/m-node1"


def test_rules_keep_prometheus_templates_and_use_the_settings():
    text = render(
        "hostmesh-rules.yml.j2",
        prometheus_node_offline_for="25s",
        prometheus_certificate_expiry_days=7,
        prometheus_dns_failures_window="15m",
    )
    rules = {r["alert"]: r for r in yaml.safe_load(text)["groups"][0]["rules"]}
    assert set(rules) == {
        "HostmeshNodeOffline",
        "HostmeshScrapeFailing",
        "HostmeshDnsUpdatesFailing",
        "HostmeshNodeNotScraped",
        "HostmeshDdnsUpdaterFailing",
        "HostmeshCertificateExpiring",
    }
    offline = rules["HostmeshNodeOffline"]
    assert offline["expr"] == 'hostmesh_node_status{status="online"} == 0'
    assert offline["for"] == "25s"
    assert (
        offline["annotations"]["summary"]
        == "{{ $labels.node }} is not online in the primary's view"
    )
    assert rules["HostmeshCertificateExpiring"]["expr"] == (
        "traefik_tls_certs_not_after - time() < 7 * 86400"
    )
    assert "[15m]" in rules["HostmeshDnsUpdatesFailing"]["expr"]
    # a discovered agent without a token is HostmeshNodeNotScraped's, not this one's
    assert rules["HostmeshScrapeFailing"]["expr"] == 'up{job!="hostmesh_agent_discovered"} == 0'
    assert rules["HostmeshNodeNotScraped"]["expr"] == 'up{job="hostmesh_agent_discovered"} == 0'
    assert rules["HostmeshNodeNotScraped"]["for"] == "5m"
    assert "run playbooks/prometheus.yml" in rules["HostmeshNodeNotScraped"]["annotations"][
        "description"]


def test_the_ddns_updater_rule_uses_the_agents_series_and_the_settings():
    """promtool test rules runs this rule on synthetic series in the site lab drill
    (tests/integration/site/test_site_prometheus.py, RULE_TESTS)."""
    text = render("hostmesh-rules.yml.j2", prometheus_ddns_max_failures=5,
                  prometheus_ddns_success_max_age=900)
    rules = {r["alert"]: r for r in yaml.safe_load(text)["groups"][0]["rules"]}
    ddns = rules["HostmeshDdnsUpdaterFailing"]
    assert ddns["expr"] == (
        "hostmesh_ddns_consecutive_failures >= 5"
        " or time() - hostmesh_ddns_last_success_timestamp_seconds > 900"
        " or hostmesh_ddns_status_ok == 0")
    assert ddns["labels"] == {"severity": "warning"}
    assert ddns["annotations"]["summary"] == "the DDNS updater on {{ $labels.instance }} is failing"
    assert ddns["annotations"]["description"].startswith(
        "5 or more failed runs in a row, no success for 900 s")
    assert "for" not in ddns  # the failure count is the hysteresis


def test_nodes_of_the_registry_come_from_the_primarys_file_sd():
    targets = [*TARGETS, {"name": "web.1", "agent": "10.50.0.4", "traefik": "10.50.0.4"}]
    config = yaml.safe_load(render("prometheus.yml.j2", _prometheus_targets=targets))
    discovered = job(config, "hostmesh_agent_discovered")
    assert discovered["file_sd_configs"] == [
        {"files": ["/var/lib/hostmesh-prometheus-sd/agents.json"]}]
    # no token: it would go to a node nobody vouched for (HostmeshNodeNotScraped says so)
    assert "authorization" not in discovered and "static_configs" not in discovered
    # the inventory's nodes keep their own job (with their token): dropped here,
    # names matched literally
    assert discovered["relabel_configs"] == [
        {"source_labels": ["instance"], "regex": "(node1|node2|node3|web\\.1)",
         "action": "drop"}]
    traefik = job(config, "traefik")
    assert traefik["file_sd_configs"] == [
        {"files": ["/var/lib/hostmesh-prometheus-sd/traefik.json"]}]
    # only file_sd targets have __meta_filepath: the static ones are never dropped
    assert traefik["relabel_configs"] == [
        {"source_labels": ["__meta_filepath", "instance"],
         "regex": ".+;(node1|node2|node3|web\\.1)", "action": "drop"}]
    assert len(traefik["static_configs"]) == len(targets)

    off = yaml.safe_load(render("prometheus.yml.j2", prometheus_file_sd=False))
    assert [j["job_name"] for j in off["scrape_configs"]] == [
        "hostmesh_agent_node1", "hostmesh_agent_node2", "hostmesh_agent_node3", "traefik"]
    assert "file_sd_configs" not in job(off, "traefik")
    assert "relabel_configs" not in job(off, "traefik")


@pytest.mark.parametrize(("scrape_traefik", "port_line"), [
    (True, "Environment=PROMETHEUS_SD_TRAEFIK_PORT=8091"),
    (False, "Environment=PROMETHEUS_SD_TRAEFIK_PORT="),
])
def test_the_agents_drop_in_names_the_directory_and_may_write_it(scrape_traefik, port_line):
    text = render("hostmesh-agent-file-sd.conf.j2", prometheus_scrape_traefik=scrape_traefik,
                  prometheus_traefik_port=8091, prometheus_file_sd_dir="/srv/sd")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == ["[Service]", "Environment=PROMETHEUS_SD_DIR=/srv/sd", port_line,
                     "ReadWritePaths=-/srv/sd"]


@pytest.mark.parametrize("url", ["", "https://hooks.example.org/x?token=abc"])
def test_alertmanager_posts_to_the_webhook_only_when_given(url):
    config = yaml.safe_load(render("alertmanager.yml.j2", prometheus_webhook_url=url))
    assert config["route"]["receiver"] == "hostmesh"
    assert config["route"]["group_wait"] == "5s"
    (receiver,) = config["receivers"]
    if url:
        assert receiver["webhook_configs"] == [{"url": url, "send_resolved": True}]
    else:
        assert receiver == {"name": "hostmesh"}


def test_both_services_listen_on_loopback_and_alertmanager_does_not_gossip():
    prometheus = render("prometheus.default.j2")
    alertmanager = render("prometheus-alertmanager.default.j2")
    assert "--web.listen-address=127.0.0.1:9090 " in prometheus
    assert "--storage.tsdb.retention.time=15d" in prometheus
    assert '--web.listen-address=127.0.0.1:9093 --cluster.listen-address="' in alertmanager


def test_series_only_the_primary_may_send_are_dropped_from_everyone_else():
    """Every secondary may be hostile: its agent or Traefik could claim another node is
    offline (hostmesh_node_status) or that DNS fails; a discovered node is trusted for
    nothing but answering."""
    config = yaml.safe_load(render("prometheus.yml.j2"))
    drop_primary_only = [{"source_labels": ["__name__"],
                          "regex": "hostmesh_(node_.*|nodes|dns_.*|health_check.*|heartbeats_total)",
                          "action": "drop"}]
    assert "metric_relabel_configs" not in job(config, "hostmesh_agent_node1")  # the primary
    for name in ("node2", "node3"):
        assert job(config, f"hostmesh_agent_{name}")["metric_relabel_configs"] == \
            drop_primary_only
    assert job(config, "traefik")["metric_relabel_configs"] == [
        {"source_labels": ["__name__"], "regex": "hostmesh_.*", "action": "drop"}]
    assert job(config, "hostmesh_agent_discovered")["metric_relabel_configs"] == [
        {"source_labels": ["__name__"], "regex": ".+", "action": "drop"}]
    # what a secondary's agent must keep sending: its own DDNS updater and info
    pattern = re.compile(drop_primary_only[0]["regex"])
    for kept in ("hostmesh_ddns_consecutive_failures", "hostmesh_ddns_status_ok",
                 "hostmesh_agent_info", "hostmesh_ddns_last_success_timestamp_seconds"):
        assert not pattern.fullmatch(kept), kept
    for dropped in ("hostmesh_node_status", "hostmesh_nodes", "hostmesh_dns_failures_total",
                    "hostmesh_health_checks_total", "hostmesh_heartbeats_total",
                    "hostmesh_health_check_duration_seconds_bucket"):
        assert pattern.fullmatch(dropped), dropped
