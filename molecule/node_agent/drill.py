#!/usr/bin/env python3
"""Checks of the node_agent scenario that need more than Ansible tasks.

    drill.py STATE_DIR LOGDIR -- ANSIBLE_PLAYBOOK_ARGS...

1. --check --diff of the converge playbook at -vvv: must succeed with changed=0;
2. rotate_keys.yml at -vvv while a watcher polls the primary every 0.5 s:
   no node may ever be seen in another status than online;
3. every secret value (before and after the rotation) is absent from both
   -vvv logs;
4. the primary's SQLite files hold no plaintext key or token;
5. rotate_keys.yml with the primary's agent stopped stops before any change,
   saying that the primary's API does not answer.
Prints `name: value unit` figures; exits non-zero on any failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

PRIMARY_CONTAINER = "agent-node1"
# The agent's API is on the mesh and loopback only: the watcher asks it on the
# primary itself, like a person at its console (docker exec), tokens on stdin.
FETCH = """
import json, sys, urllib.error, urllib.request
for token in sys.stdin.read().split():
    req = urllib.request.Request("http://127.0.0.1:8080/api/nodes",
                                 headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            print(resp.read().decode())
            sys.exit(0)
    except urllib.error.HTTPError as exc:
        if exc.code != 401:
            raise
sys.exit("no admin token accepted")
"""


def secrets_in(state: Path) -> dict[str, str]:
    out = {}
    for path in sorted((state / "secrets").glob("*")):
        for i, line in enumerate(path.read_text().split()):
            out[f"{path.name}[{i}]"] = line.strip()
    return out


def admin_tokens(state: Path) -> list[str]:
    d = state / "secrets"
    tokens = [(d / "admin_token").read_text().strip()]
    prev = d / "admin_token.previous"
    if prev.exists():
        tokens += prev.read_text().split()
    return tokens


def fetch_nodes(state: Path):
    proc = subprocess.run(
        ["docker", "exec", "-i", PRIMARY_CONTAINER, "python3", "-c", FETCH],
        input="\n".join(admin_tokens(state)),
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the primary did not answer: {proc.stderr[-300:]}")
    return json.loads(proc.stdout)


class Watcher(threading.Thread):
    def __init__(self, state: Path):
        super().__init__(daemon=True)
        self.state, self.stop, self.bad, self.polls, self.errors = state, False, [], 0, 0

    def run(self):
        while not self.stop:
            try:
                for node in fetch_nodes(self.state):
                    if node.get("status") != "online":
                        self.bad.append((time.time(), node.get("name"), node.get("status")))
                self.polls += 1
            except Exception:  # noqa: BLE001 - the primary restarts during the drill
                self.errors += 1
            time.sleep(0.5)


def playbook(args: list[str], log: Path) -> tuple[int, str, float]:
    start = time.monotonic()
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-vvv", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    text = proc.stdout + proc.stderr
    log.write_text(text)
    return proc.returncode, text, time.monotonic() - start


def main() -> int:
    state, logdir = Path(sys.argv[1]), Path(sys.argv[2])
    common = sys.argv[sys.argv.index("--") + 1 :]
    logdir.mkdir(parents=True, exist_ok=True)
    failures = []
    before = secrets_in(state)

    rc, text, secs = playbook([*common, "--check", "--diff", "converge.yml"], logdir / "check.log")
    print(f"check_diff_converge: {secs:.1f} s")
    recap = [ln for ln in text.splitlines() if "changed=" in ln and "ok=" in ln]
    if rc != 0 or any("changed=0" not in ln for ln in recap) or not recap:
        failures.append(f"--check --diff: rc={rc}, recap={recap}")

    watcher = Watcher(state)
    watcher.start()
    rc, _text, secs = playbook([*common, "../../playbooks/rotate_keys.yml"], logdir / "rotate.log")
    time.sleep(2)
    watcher.stop = True
    watcher.join()
    print(f"rotate_keys: {secs:.1f} s")
    print(f"rotate_watch_polls: {watcher.polls} polls")
    print(f"rotate_not_online_observations: {len(watcher.bad)} observations")
    if rc != 0:
        failures.append(f"rotate_keys.yml failed (rc={rc}); see {logdir / 'rotate.log'}")
    if watcher.bad:
        failures.append(f"nodes left online during rotation: {watcher.bad[:5]}")
    if watcher.polls < 5:
        failures.append(f"the watcher saw the primary only {watcher.polls} times")

    after = secrets_in(state)
    if after.get("admin_token[0]") == before.get("admin_token[0]"):
        failures.append("the admin token did not change")
    changed = [k for k in before if k.startswith("node_api_key_") and before[k] == after.get(k)]
    if changed:
        failures.append(f"keys not rotated: {changed}")
    if any(k.endswith(".previous[0]") for k in after):
        failures.append("previous values were not forgotten at the end")

    values = {
        **{f"old {k}": v for k, v in before.items()},
        **{f"new {k}": v for k, v in after.items()},
    }
    for name, value in values.items():
        for log in ("check.log", "rotate.log"):
            if value in (logdir / log).read_text():
                failures.append(f"secret {name} appears in {log}")
    db = subprocess.run(
        ["docker", "exec", PRIMARY_CONTAINER, "sh", "-c", "cat /var/lib/hostmesh/hostmesh.db*"],
        capture_output=True,
        check=True,
    ).stdout
    print(f"primary_db_bytes: {len(db)} bytes")
    for name, value in values.items():
        if value.encode() in db:
            failures.append(f"plaintext {name} found in the primary's database")
    # a primary whose API does not answer: the operation stops before any change
    subprocess.run(["docker", "exec", PRIMARY_CONTAINER, "systemctl", "stop", "hostmesh-agent"],
                   check=True)
    try:
        kept = secrets_in(state)
        rc, text, secs = playbook([*common, "../../playbooks/rotate_keys.yml"],
                                  logdir / "rotate-no-api.log")
        print(f"rotate_keys_primary_down: {secs:.1f} s")
        if rc == 0 or "Nothing was changed: the primary agent-node1 does not answer" not in text:
            failures.append("rotate_keys.yml with the primary's agent stopped did not stop with "
                            f"a clear message; see {logdir / 'rotate-no-api.log'}")
        if secrets_in(state) != kept:
            failures.append("rotate_keys.yml changed secrets although the primary did not answer")
    finally:
        subprocess.run(["docker", "exec", PRIMARY_CONTAINER, "systemctl", "start",
                        "hostmesh-agent"], check=True)

    for f in failures:
        print("FAIL:", f)
    print(f"secrets_checked: {len(values)} values")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
