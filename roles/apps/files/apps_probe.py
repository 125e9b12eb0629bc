"""What hostmesh.cluster.apps needs to know about a node, in one round trip:
Docker Engine (socket, packages, daemon.json, service), the apps reporter
(unit, service, the agent's apps-report command) and the agent user's groups.
Prints one JSON object; changes nothing. Inputs come from the environment."""
import json
import os
import subprocess


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def systemctl(verb, unit):
    return subprocess.run(["systemctl", verb, "--quiet", unit], check=False).returncode == 0


def installed(package):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                       capture_output=True, text=True, check=False)
    return r.returncode == 0 and r.stdout.endswith(" installed")


env = os.environ
user = env["APPS_AGENT_USER"]
program = env["APPS_AGENT_PROGRAM"]
groups = {}
for line in (read("/etc/group") or "").splitlines():
    fields = line.split(":")
    if len(fields) >= 4:
        groups[fields[0]] = fields[3].split(",") if fields[3] else []
has_program = os.path.exists(program)
out = {
    "sock": os.path.exists("/run/docker.sock"),
    "missing_packages": [p for p in env["APPS_PACKAGES"].split() if not installed(p)],
    "daemon_json": read("/etc/docker/daemon.json"),
    "docker_running": systemctl("is-active", "docker.service")
    and systemctl("is-enabled", "docker.service"),
    "reporter_unit": read("/etc/systemd/system/hostmesh-apps-report.service"),
    "reporter_running": systemctl("is-active", "hostmesh-apps-report.service")
    and systemctl("is-enabled", "hostmesh-apps-report.service"),
    "agent_program": has_program,
    # only asked where the reporter would run: an agent older than the collection lacks it
    "agent_reports_apps": has_program and env.get("APPS_ASK_AGENT") == "1" and subprocess.run(
        [program, "apps-report", "--help"], capture_output=True, check=False).returncode == 0,
    "agent_group_exists": env["APPS_AGENT_GROUP"] in groups,
    "agent_in_docker_group": user in groups.get("docker", []),
}
print(json.dumps(out))
