"""Metrics and alerts on the site lab (issue 17): playbooks/prometheus.yml.

Prometheus and Alertmanager (Debian packages) on the primary scrape every
agent's /metrics with the metrics token and every Traefik's /metrics over the
mesh; Alertmanager posts to a webhook receiver this test runs on the lab
network's gateway (the controller, as the lab's Cloudflare does). Then:
- a 5-day certificate put into node1's Traefik: HostmeshCertificateExpiring
  reaches the webhook (from Traefik's own traefik_tls_certs_not_after);
- `docker stop` node3: the HostmeshNodeOffline alert for node3 reaches the
  webhook within a minute; `docker start`: it is resolved;
- the alert rules fire on synthetic series (promtool test rules on the
  primary): DNS failures, a certificate near its end, an offline node;
- a second run and `--check --diff` change nothing, and no node's token is in
  any output; each node's token file is 0600, Prometheus' user;
- every node has its own metrics token, sent to that node alone: node2's token
  (which node2's agent receives at every scrape) is refused by the primary's
  /metrics (401), while the primary's own token is accepted there.
- Prometheus follows the primary's registry: its agent writes the file_sd
  targets (2750/640, the agent's user, Prometheus' group); a node created
  through the admin API (not in the inventory) shows up as a discovered agent
  and Traefik target without another playbook run, and leaves when deleted;
- a node's DDNS updater status (three failed real `hostmesh ddns sync` runs on
  node2) reaches the webhook as HostmeshDdnsUpdaterFailing for node2 through
  node2's agent, and is resolved when the status file goes.
The module leaves the cluster as it found it: Prometheus and Alertmanager
stopped and disabled (`prometheus_enabled: false`), the primary's agent
without the file_sd drop-in and directory, every node online.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sitedrill import LAB, docker, node_status, on_node, start_node, wait_for, wait_until_restored
from sitelab import recap, run_playbook

PLAYBOOK = "playbooks/prometheus.yml"

RULE_TESTS = """\
rule_files: [/etc/prometheus/hostmesh-rules.yml]
evaluation_interval: 10s
tests:
  - interval: 10s
    input_series:
      - series: 'hostmesh_node_status{instance="node1",job="hostmesh_agent",node="node3",status="online"}'
        values: '1 1 0 0 0 0 0'
      - series: 'hostmesh_dns_failures_total{instance="node1",job="hostmesh_agent"}'
        values: '0 0 1 1 1 1 1'
      - series: 'traefik_tls_certs_not_after{instance="node2",job="traefik",cn="lab.test",sans="lab.test,*.lab.test",serial="1"}'
        values: '864000 864000 864000 864000 864000 864000 864000'
      - series: 'traefik_tls_certs_not_after{instance="node2",job="traefik",cn="ok.test",sans="ok.test",serial="2"}'
        values: '9000000 9000000 9000000 9000000 9000000 9000000 9000000'
    alert_rule_test:
      - eval_time: 10s
        alertname: HostmeshNodeOffline
        exp_alerts: []
      - eval_time: 60s
        alertname: HostmeshNodeOffline
        exp_alerts:
          - exp_labels: {severity: critical, instance: node1, job: hostmesh_agent, node: node3, status: online}
            exp_annotations:
              summary: "node3 is not online in the primary's view"
              description: "The primary's agent has not heard from node3 (heartbeats and health checks failed)."
      - eval_time: 10s
        alertname: HostmeshDnsUpdatesFailing
        exp_alerts: []
      - eval_time: 30s
        alertname: HostmeshDnsUpdatesFailing
        exp_alerts:
          - exp_labels: {severity: warning, instance: node1, job: hostmesh_agent}
            exp_annotations:
              summary: "health-aware DNS on node1 failed 1 times recently"
              description: "See the primary's journal: journalctl -u hostmesh-agent | grep 'dns update failed'"
      - eval_time: 30s
        alertname: HostmeshCertificateExpiring
        exp_alerts:
          - exp_labels: {severity: warning, instance: node2, job: traefik, cn: lab.test, sans: "lab.test,*.lab.test", serial: "1"}
            exp_annotations:
              summary: "the certificate lab.test (serial 1) served by node2 ends in 9d 23h 59m 30s"
  # The DDNS updaters (a run every 5 min) and a node that joined after prometheus.yml
  - interval: 1m
    input_series:
      # node1 fine: a success every 5 minutes
      - series: 'hostmesh_ddns_status_ok{instance="node1",job="hostmesh_agent"}'
        values: '1x40'
      - series: 'hostmesh_ddns_consecutive_failures{instance="node1",job="hostmesh_agent"}'
        values: '0x40'
      - series: 'hostmesh_ddns_last_success_timestamp_seconds{instance="node1",job="hostmesh_agent"}'
        values: '0x4 300x4 600x4 900x4 1200x4 1500x4 1800x4 2100x4 2400x4'
      # node2 fails from minute 1 on (its series end at 6m, its last success was at 0)
      - series: 'hostmesh_ddns_status_ok{instance="node2",job="hostmesh_agent"}'
        values: '1x40'
      - series: 'hostmesh_ddns_consecutive_failures{instance="node2",job="hostmesh_agent"}'
        values: '0 1 2 3 4 5 6'
      - series: 'hostmesh_ddns_last_success_timestamp_seconds{instance="node2",job="hostmesh_agent"}'
        values: '0x40'
      # node3's timer stopped after its success at 0: only the age tells
      - series: 'hostmesh_ddns_status_ok{instance="node3",job="hostmesh_agent"}'
        values: '1x40'
      - series: 'hostmesh_ddns_consecutive_failures{instance="node3",job="hostmesh_agent"}'
        values: '0x40'
      - series: 'hostmesh_ddns_last_success_timestamp_seconds{instance="node3",job="hostmesh_agent"}'
        values: '0x40'
      # node4's status file turns invalid at 1m (the series ends at 2m)
      - series: 'hostmesh_ddns_status_ok{instance="node4",job="hostmesh_agent"}'
        values: '1 0 0'
      # node5 registered after prometheus.yml: discovered, its agent refuses
      - series: 'up{instance="node5",job="hostmesh_agent_discovered"}'
        values: '0x10'
    alert_rule_test:
      - eval_time: 0m
        alertname: HostmeshDdnsUpdaterFailing
        exp_alerts: []
      - eval_time: 2m
        alertname: HostmeshDdnsUpdaterFailing
        exp_alerts:
          - exp_labels: {severity: warning, instance: node4, job: hostmesh_agent}
            exp_annotations:
              summary: "the DDNS updater on node4 is failing"
              description: "3 or more failed runs in a row, no success for 1800 s, or an invalid status file. On that node: journalctl -u hostmesh-ddns.service, and last_error in /var/lib/hostmesh-ddns/status.json"
      - eval_time: 3m
        alertname: HostmeshDdnsUpdaterFailing
        exp_alerts:
          - exp_labels: {severity: warning, instance: node2, job: hostmesh_agent}
            exp_annotations:
              summary: "the DDNS updater on node2 is failing"
              description: "3 or more failed runs in a row, no success for 1800 s, or an invalid status file. On that node: journalctl -u hostmesh-ddns.service, and last_error in /var/lib/hostmesh-ddns/status.json"
          - exp_labels: {severity: warning, instance: node4, job: hostmesh_agent}
            exp_annotations:
              summary: "the DDNS updater on node4 is failing"
              description: "3 or more failed runs in a row, no success for 1800 s, or an invalid status file. On that node: journalctl -u hostmesh-ddns.service, and last_error in /var/lib/hostmesh-ddns/status.json"
      - eval_time: 30m
        alertname: HostmeshDdnsUpdaterFailing
        exp_alerts: []
      - eval_time: 31m
        alertname: HostmeshDdnsUpdaterFailing
        exp_alerts:
          - exp_labels: {severity: warning, instance: node2, job: hostmesh_agent}
            exp_annotations:
              summary: "the DDNS updater on node2 is failing"
              description: "3 or more failed runs in a row, no success for 1800 s, or an invalid status file. On that node: journalctl -u hostmesh-ddns.service, and last_error in /var/lib/hostmesh-ddns/status.json"
          - exp_labels: {severity: warning, instance: node3, job: hostmesh_agent}
            exp_annotations:
              summary: "the DDNS updater on node3 is failing"
              description: "3 or more failed runs in a row, no success for 1800 s, or an invalid status file. On that node: journalctl -u hostmesh-ddns.service, and last_error in /var/lib/hostmesh-ddns/status.json"
      - eval_time: 4m
        alertname: HostmeshNodeNotScraped
        exp_alerts: []
      - eval_time: 6m
        alertname: HostmeshNodeNotScraped
        exp_alerts:
          - exp_labels: {severity: warning, instance: node5, job: hostmesh_agent_discovered}
            exp_annotations:
              summary: "node5 is in the primary's registry but its agent is not scraped"
              description: "Prometheus has no metrics token for it (it joined after playbooks/prometheus.yml ran, or is not in the inventory): add it to the inventory and run playbooks/prometheus.yml."
      - eval_time: 6m
        alertname: HostmeshScrapeFailing
        exp_alerts: []
"""


CERT_DIR = "/etc/traefik/prometheus-drill"
CERT_ROUTES = "/etc/traefik/dynamic/zz-prometheus-drill.yml"
# A self-signed certificate valid for 5 days, in node1's Traefik file provider.
SHORT_CERT = f"""set -e
mkdir -p {CERT_DIR}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 5 \\
  -subj /CN=expiring.lab.test -keyout {CERT_DIR}/key.pem -out {CERT_DIR}/cert.pem 2>/dev/null
chown -R root:traefik {CERT_DIR}; chmod 750 {CERT_DIR}; chmod 640 {CERT_DIR}/*
printf 'tls:\\n  certificates:\\n    - certFile: %s\\n      keyFile: %s\\n' \\
  {CERT_DIR}/cert.pem {CERT_DIR}/key.pem > {CERT_ROUTES}.tmp
chown root:traefik {CERT_ROUTES}.tmp; chmod 640 {CERT_ROUTES}.tmp; mv {CERT_ROUTES}.tmp {CERT_ROUTES}
"""


def cert_alert(hook: Webhook, status: str) -> dict | None:
    for _, state, labels in hook.alerts():
        if (labels.get("alertname"), labels.get("cn"), state) == (
            "HostmeshCertificateExpiring",
            "expiring.lab.test",
            status,
        ):
            return labels
    return None


class Webhook:
    """Alertmanager's webhook receiver: every POSTed JSON body, with its arrival time."""

    def __init__(self, host: str):
        self.received: list[tuple[float, dict]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    hook.received.append((time.monotonic(), json.loads(body)))
                finally:
                    self.send_response(200)
                    self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, since: float = 0.0) -> list[tuple[float, str, dict]]:
        """(arrival, status, labels) of every alert received after `since`."""
        return [
            (at, alert["status"], alert["labels"])
            for at, body in list(self.received)
            if at >= since
            for alert in body.get("alerts", [])
        ]


def offline_alert(hook: Webhook, node: str, status: str, since: float) -> float | None:
    for at, state, labels in hook.alerts(since):
        if (labels.get("alertname"), labels.get("node"), state) == (
            "HostmeshNodeOffline",
            node,
            status,
        ):
            return at
    return None


def prometheus_get(path: str) -> dict:
    return json.loads(on_node("node1", "curl", "-sf", f"http://127.0.0.1:9090{path}"))


def targets_up() -> dict[str, str]:
    data = prometheus_get("/api/v1/targets")["data"]["activeTargets"]
    return {f"{t['labels']['job']}/{t['labels']['instance']}": t["health"] for t in data}


# GET /metrics on the agent's loopback with the bearer token read from stdin
CURL_METRICS = """read -r t
curl -s -o /dev/null -m 5 -w '%{http_code}' -H @- http://127.0.0.1:8080/metrics <<EOF
Authorization: Bearer $t
EOF
"""


# A call to the primary's admin API on its loopback, the admin token read from stdin
ADMIN_CALL = """read -r t
curl -s -m 10 -o /dev/null -w '%{http_code}' -X "$1" -H @- -H 'Content-Type: application/json' \\
  --data-binary "$2" "http://127.0.0.1:8080$3" <<EOF
Authorization: Bearer $t
EOF
"""
SD_DIR = "/var/lib/hostmesh-prometheus-sd"
LATE_ID = "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
LATE = {"id": LATE_ID, "name": "late-node", "api_endpoint": "http://10.50.0.250:8080",
        "api_key": "7" * 64, "wireguard_ip": "10.50.0.250"}
DDNS_STATUS = "/var/lib/hostmesh-ddns/status.json"
# node2's real updater (the ddns role's unit, user and status directory) run three
# times while the lab's detector is down: three failed runs in a row
DDNS_FAILING = """for i in 1 2 3; do systemctl start hostmesh-ddns.service; done
python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["consecutive_failures"])' \\
  /var/lib/hostmesh-ddns/status.json
"""


def lab_trace(gateway: str, body: dict) -> None:
    """Set the lab Cloudflare's detector (tests/cloudflare_server): {"down": true} or {}."""
    request = urllib.request.Request(
        f"http://{gateway}:8787/_hm/trace", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


def admin_api(site, method: str, path: str, body: dict | None = None) -> str:
    """HTTP status of an admin call to the primary's agent (token through stdin)."""
    token = (site.inventory / ".hostmesh" / "secrets" / "admin_token").read_text().strip()
    proc = subprocess.run(
        ["docker", "exec", "-i", LAB.container("node1"), "sh", "-c", ADMIN_CALL, "sh", method,
         json.dumps(body or {}), path],
        input=token + "\n", capture_output=True, text=True, timeout=30, check=False)
    return proc.stdout.strip()


def all_targets() -> dict[str, str]:
    data = prometheus_get("/api/v1/targets")["data"]["activeTargets"]
    return {f"{t['labels']['job']}/{t['labels']['instance']}": t["scrapeUrl"] for t in data}


def named_alert(hook: Webhook, name: str, instance: str, status: str, since: float):
    for at, state, labels in hook.alerts(since):
        if (labels.get("alertname"), labels.get("instance"), state) == (name, instance, status):
            return at
    return None


def metrics_status(node: str, token: str) -> str:
    """HTTP status of GET /metrics on `node`'s agent (its loopback) with `token`;
    the token goes through stdin, never onto a command line."""
    proc = subprocess.run(
        ["docker", "exec", "-i", LAB.container(node), "sh", "-c", CURL_METRICS],
        input=token + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.stdout.strip()


def test_prometheus_alerts_on_a_stopped_node(site):
    gateway = str(next(ipaddress.ip_network(LAB.subnet).hosts()))
    secrets = site.inventory / ".hostmesh" / "secrets"
    with Webhook(gateway) as hook:
        on = json.dumps({"prometheus_webhook_url": hook.url})
        try:
            proc, took = run_playbook(site.inventory, PLAYBOOK, "-e", on, check=False)
            assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
            print(f"prometheus.yml first run: {took:.1f} s")
            # one token per node, no two alike, none in the output
            tokens = {n: (secrets / f"metrics_token_{n}").read_text().strip() for n in LAB.nodes}
            assert all(tokens.values()) and len(set(tokens.values())) == len(LAB.nodes)
            for token in tokens.values():
                assert token not in proc.stdout + proc.stderr

            # a second run and --check --diff on the converged primary change nothing
            again, _ = run_playbook(site.inventory, PLAYBOOK, "--diff", "-e", on, check=False)
            assert again.returncode == 0, again.stdout[-6000:]
            assert recap(again.stdout)["node1"]["changed"] == 0, again.stdout[-4000:]
            dry, _ = run_playbook(
                site.inventory, PLAYBOOK, "--check", "--diff", "-e", on, check=False
            )
            assert dry.returncode == 0, dry.stdout[-6000:]
            assert recap(dry.stdout)["node1"]["changed"] == 0, dry.stdout[-4000:]
            for out in (again.stdout, again.stderr, dry.stdout, dry.stderr):
                for token in tokens.values():
                    assert token not in out
                assert hook.url not in out  # the webhook URL may hold a secret: no diff

            # the tokens: one file per node, 0600, Prometheus' user, on the primary only
            for n in LAB.nodes:
                path = f"/etc/prometheus/hostmesh-metrics-token-{n}"
                assert on_node("node1", "stat", "-c", "%a %U", path) == "600 prometheus", path
            shared = "/etc/prometheus/hostmesh-metrics-token"  # earlier versions' one token
            assert docker(
                "exec", LAB.container("node1"), "test", "-e", shared, check=False
            ).returncode

            # node2's token, which Prometheus hands to node2's agent at every
            # scrape, is worth nothing on the primary: it cannot be replayed
            assert metrics_status("node1", tokens["node2"]) == "401"
            assert metrics_status("node1", tokens["node1"]) == "200"
            assert metrics_status("node2", tokens["node2"]) == "200"
            # Prometheus and Alertmanager on loopback only, no gossip port
            listening = on_node("node1", "ss", "-Hltn")
            assert "127.0.0.1:9090" in listening and "127.0.0.1:9093" in listening
            assert "*:9090" not in listening and ":9094" not in listening

            # every agent and every Traefik scraped over the mesh
            expected = {f"{job}/{n}" for job in ("hostmesh_agent", "traefik") for n in LAB.nodes}
            wait_for(
                lambda: targets_up() == dict.fromkeys(expected, "up"),
                60,
                "every target up",
                interval=2,
            )
            series = prometheus_get(
                "/api/v1/query?query=hostmesh_node_status%7Bstatus%3D%22online%22%7D"
            )
            assert {r["metric"]["node"] for r in series["data"]["result"]} == set(LAB.nodes)

            # the rules on synthetic series
            proc_rules = _promtool_test()
            assert "SUCCESS" in proc_rules, proc_rules

            # Prometheus follows the primary's registry: file_sd from its agent
            assert on_node("node1", "stat", "-c", "%a %U %G", SD_DIR) == "2750 hostmesh prometheus"
            for name in ("agents.json", "traefik.json"):
                assert on_node("node1", "stat", "-c", "%a %U %G", f"{SD_DIR}/{name}") == \
                    "640 hostmesh prometheus", name
            listed = json.loads(on_node("node1", "cat", f"{SD_DIR}/agents.json"))
            assert {g["labels"]["instance"] for g in listed} == set(LAB.nodes)
            # the inventory's nodes are not scraped twice (their discovered copies dropped)
            assert set(all_targets()) == expected
            late_targets = {"hostmesh_agent_discovered/late-node", "traefik/late-node"}
            assert admin_api(site, "POST", "/api/nodes", LATE) == "201"
            created = time.monotonic()
            try:
                seen = wait_for(
                    lambda: late_targets <= set(all_targets()) and time.monotonic(),
                    60, "late-node among Prometheus' targets", interval=0.5)
                found = all_targets()
                assert found["traefik/late-node"] == "http://10.50.0.250:8090/metrics"
                assert found["hostmesh_agent_discovered/late-node"] == \
                    "http://10.50.0.250:8080/metrics"
            finally:
                assert admin_api(site, "DELETE", f"/api/nodes/{LATE_ID}") == "204"
            deleted = time.monotonic()
            gone = wait_for(lambda: not late_targets & set(all_targets()) and time.monotonic(),
                            60, "late-node gone from Prometheus' targets", interval=0.5)
            assert set(all_targets()) == expected
            print(f"prometheus drill: a node created in the registry is a target "
                  f"{seen - created:.1f} s later and gone {gone - deleted:.1f} s after its "
                  "deletion, without a playbook run")

            # Every node's DDNS updater (the lab runs it every minute) records its
            # runs for its agent: readable by the agent's group, written by the updater
            for n in LAB.nodes:
                assert on_node(n, "stat", "-c", "%a %U %G", "/var/lib/hostmesh-ddns") == \
                    "2750 hostmesh-ddns hostmesh", n
                assert on_node(n, "stat", "-c", "%a %U %G", DDNS_STATUS) == \
                    "640 hostmesh-ddns hostmesh", n
                assert '"consecutive_failures": 0' in on_node(
                    n, "runuser", "-u", "hostmesh", "--", "cat", DDNS_STATUS)
                refused = docker("exec", LAB.container(n), "runuser", "-u", "hostmesh", "--",
                                 "sh", "-c", f": > {DDNS_STATUS}", check=False)
                assert refused.returncode != 0, n  # the agent's user cannot write it
            wait_for(lambda: {r["metric"]["instance"] for r in prometheus_get(
                "/api/v1/query?query=hostmesh_ddns_last_success_timestamp_seconds")["data"][
                "result"]} == set(LAB.nodes), 60, "every node's DDNS success in Prometheus")
            assert named_alert(hook, "HostmeshDdnsUpdaterFailing", "node2", "firing", 0.0) is None

            # node2's updater fails three times in a row: its agent exports it, the
            # alert reaches the webhook; one good run resolves it
            before = time.monotonic()
            lab_trace(gateway, {"down": True})
            try:
                # 3, or 4 when node2's own timer ran in between
                assert int(on_node("node2", "sh", "-c", DDNS_FAILING)) >= 3
            finally:
                lab_trace(gateway, {})
            failed = time.monotonic()
            ddns_fired = wait_for(
                lambda: named_alert(hook, "HostmeshDdnsUpdaterFailing", "node2", "firing",
                                    before), 90,
                "HostmeshDdnsUpdaterFailing for node2 at the webhook", interval=0.5)
            failing = prometheus_get(
                "/api/v1/query?query=hostmesh_ddns_consecutive_failures%20%3E%3D%203")
            assert [r["metric"]["instance"] for r in failing["data"]["result"]] == ["node2"]
            on_node("node2", "systemctl", "start", "hostmesh-ddns.service")
            recovered = time.monotonic()
            assert '"consecutive_failures": 0' in on_node("node2", "cat", DDNS_STATUS)
            ddns_resolved = wait_for(
                lambda: named_alert(hook, "HostmeshDdnsUpdaterFailing", "node2", "resolved",
                                    recovered), 150,
                "HostmeshDdnsUpdaterFailing for node2 resolved", interval=1)
            print(f"prometheus drill: DDNS updater alert at the webhook {ddns_fired - failed:.1f} s "
                  f"after node2's third failed run; resolved {ddns_resolved - recovered:.1f} s "
                  "after a good run")

            # a certificate near its end, served by node1's Traefik: Traefik's own
            # traefik_tls_certs_not_after carries it to HostmeshCertificateExpiring
            on_node("node1", "sh", "-c", SHORT_CERT)
            try:
                expiring = wait_for(
                    lambda: cert_alert(hook, "firing"),
                    90,
                    "HostmeshCertificateExpiring for expiring.lab.test at the webhook",
                    interval=1,
                )
                assert expiring["instance"] == "node1", expiring
            finally:
                on_node("node1", "rm", "-rf", CERT_DIR, CERT_ROUTES)

            # node3 stops: the alert reaches the webhook within a minute
            wait_for(
                lambda: all(node_status(site.cfg, n) == "online" for n in LAB.nodes),
                60,
                "every node online",
                interval=1,
            )
            assert offline_alert(hook, "node3", "firing", 0.0) is None
            # `docker stop` returns when the container is gone (its systemd ignores
            # SIGTERM; docker kills it after 10 s): the node dies then
            docker("stop", LAB.container("node3"))
            stopped = time.monotonic()
            try:
                fired = wait_for(
                    lambda: offline_alert(hook, "node3", "firing", stopped),
                    90,
                    "HostmeshNodeOffline for node3 at the webhook",
                    interval=0.5,
                )
            finally:
                started = time.monotonic()
                start_node("node3")
            resolved = wait_for(
                lambda: offline_alert(hook, "node3", "resolved", started),
                180,
                "HostmeshNodeOffline for node3 resolved at the webhook",
                interval=1,
            )
            print(
                f"prometheus drill: node-offline alert at the webhook {fired - stopped:.1f} s "
                f"after node3 died; resolved {resolved - started:.1f} s after docker start"
            )
            assert fired - stopped <= 60, fired - stopped
            firing = [a for a in hook.alerts(stopped) if a[1] == "firing"]
            assert {a[2]["alertname"] for a in firing} <= {
                "HostmeshNodeOffline",
                "HostmeshScrapeFailing",
            }
            wait_for(lambda: node_status(site.cfg, "node3") == "online", 60, "node3 online")
            wait_until_restored()
        finally:
            off, _ = run_playbook(
                site.inventory, PLAYBOOK, "-e", '{"prometheus_enabled": false}', check=False
            )
            assert off.returncode == 0, off.stdout[-6000:] + off.stderr[-2000:]
            units = docker(
                "exec",
                LAB.container("node1"),
                "systemctl",
                "is-active",
                "prometheus",
                "prometheus-alertmanager",
                check=False,
            ).stdout.split()
            assert units == ["inactive", "inactive"], units
            # the primary's agent no longer writes targets: drop-in and directory gone
            dropin = "/etc/systemd/system/hostmesh-agent.service.d/hostmesh-prometheus-file-sd.conf"
            for path in (dropin, SD_DIR):
                assert docker("exec", LAB.container("node1"), "test", "-e", path,
                              check=False).returncode, path
            assert "PROMETHEUS_SD_DIR" not in on_node(
                "node1", "systemctl", "show", "-p", "Environment", "hostmesh-agent.service")
            wait_for(lambda: node_status(site.cfg, "node1") == "online", 60, "node1 online")


def _promtool_test() -> str:
    proc = docker(
        "exec",
        LAB.container("node1"),
        "sh",
        "-c",
        "cat > /tmp/hostmesh-rules.test.yml <<'EOF'\n"
        + RULE_TESTS
        + "EOF\npromtool test rules /tmp/hostmesh-rules.test.yml 2>&1; echo rc=$?",
        check=False,
    )
    return proc.stdout + proc.stderr
