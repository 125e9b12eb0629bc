#!/usr/bin/env python3
"""The hostmesh lab: base image and node containers.

Command line::

    scripts/lab.py image            build hostmesh-node:latest (cached by package-list hash)
    scripts/lab.py up [--prefix P --network N --subnet S --nodes node1,node2,node3]
                      [--ssh-dir DIR]   (default inventory/lab/.hostmesh/ssh)
    scripts/lab.py down [same options]
    scripts/lab.py status [same options]
    scripts/lab.py ssh --ssh-dir DIR CONTAINER=ADDRESS...
                    give running containers the lab's SSH key, record their host keys

Importable (pytest fixtures, bench scripts)::

    from lab import Lab, ensure_image
    lab = Lab(prefix="drill-", network="hostmesh-drill", subnet="10.231.6.0/24",
              nodes=["node1", "node2", "node3"])
    lab.up()      # containers <prefix><node> at .11, .12, ... ; waits for systemd
    lab.up(ssh_dir="/tmp/inv/.hostmesh/ssh")   # ... and for SSH (see LabSsh)
    lab.down()    # removes containers, their anonymous volumes and the network

SSH: the controller drives lab nodes as on real servers, over SSH as the
non-root user ``admin`` (passwordless sudo for ``become``). The image holds
no SSH host keys: each container makes its own at first boot
(``hostmesh-ssh-host-keys.service``). ``LabSsh`` keeps one key pair per lab
in its state directory, installs the public key in each container and records
the container's host keys in ``known_hosts`` there, reading them from the
container's console (``docker exec``), never by trusting the first key the
network offers. Inventories point Ansible at both files with host key
checking on; a host key that changes afterwards stops the run.

Only the Python standard library and the ``docker`` CLI are used, so the
script runs before the project's virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_REPO = "hostmesh-node"
IMAGE = f"{IMAGE_REPO}:latest"
SUITE = "bookworm"
MIRROR = os.environ.get("HOSTMESH_DEBIAN_MIRROR", "http://deb.debian.org/debian")

# Bumped whenever _tune_rootfs changes what the image holds (it is part of the
# image's hash tag, so the next `make image` rebuilds).
IMAGE_RECIPE = "3-docker"

# The non-root user the controller logs in as (passwordless sudo for become),
# as on a rented Debian server.
LAB_USER = "admin"
LAB_UID = 1000

# Everything the roles need on a node, baked in so converges stay fast.
# The roles still declare (and install) what they use: real hosts start bare.
PACKAGES = [
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-venv",  # agent and Traefik virtualenvs
    "python3-apt",  # ansible.builtin.apt would otherwise install it on every node
    "wireguard-tools",
    "wireguard-go",  # userspace WireGuard: the lab kernel has no module
    "iproute2",
    "iputils-ping",
    "ca-certificates",
    "curl",
    "procps",
    "libcap2-bin",  # setcap for Traefik binding :80/:443 unprivileged
    "sudo",
    "less",
    "openssh-server",  # the controller drives nodes over SSH, as on real servers
    "nftables",  # hostmesh.cluster.firewall
    # hostmesh.cluster.apps: Docker Engine (vfs storage driver: nested in the lab
    # container) and the library of the community.docker modules. Installed but
    # not enabled (see _tune_rootfs): the role starts it on nodes that run apps.
    "docker.io",
    "python3-requests",
]

# Run options that give systemd PID 1 what it needs without --privileged
# (which fails on this kind of host: CAP_SYS_RESOURCE is not in its bounding set).
RUN_OPTIONS = [
    "--cap-add", "SYS_ADMIN",
    "--cap-add", "NET_ADMIN",
    "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined",
    "--cgroupns=host",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run",
    "--tmpfs", "/run/lock",
    "--tmpfs", "/tmp",
    "--device", "/dev/net/tun",
]

LAB_LABEL = "hostmesh.lab"


class LabError(RuntimeError):
    """A lab operation failed; the message says what and how to fix it."""


def _run(cmd: list[str], *, check: bool = True, capture: bool = True,
         input_: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=capture, input=input_, check=False)
    except FileNotFoundError as exc:
        raise LabError(
            f"{cmd[0]} is not installed; run scripts/setup-host.sh (as root) first"
        ) from exc
    if check and proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip()
        raise LabError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {err}")
    return proc


def _out(cmd: list[str], **kw) -> str:
    return _run(cmd, **kw).stdout.decode(errors="replace").strip()


def docker_available() -> None:
    if shutil.which("docker") is None:
        raise LabError("the docker CLI is missing; run scripts/setup-host.sh (as root)")
    proc = _run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False)
    if proc.returncode != 0:
        raise LabError(
            "the Docker engine does not answer (`docker info` failed); "
            "run scripts/setup-host.sh (as root) to start dockerd"
        )


# --------------------------------------------------------------------- image
def package_hash(packages: list[str] | None = None) -> str:
    """Stable hash of what goes into the image (suite + sorted packages)."""
    pkgs = sorted(packages if packages is not None else PACKAGES)
    data = "\n".join([SUITE, "minbase", f"recipe-{IMAGE_RECIPE}", *pkgs]).encode()
    return hashlib.sha256(data).hexdigest()[:12]


def image_tag(packages: list[str] | None = None, repo: str = IMAGE_REPO) -> str:
    return f"{repo}:pkgs-{package_hash(packages)}"


def image_exists(ref: str) -> bool:
    return _run(["docker", "image", "inspect", ref], check=False).returncode == 0


def ensure_image(force: bool = False, quiet: bool = False, repo: str = IMAGE_REPO) -> str:
    """Build the base image unless the one for the current package list exists.

    Returns the image reference (``<repo>:latest``, by default
    ``hostmesh-node:latest``). Another ``repo`` builds a separate image (bench).
    """
    docker_available()
    image = f"{repo}:latest"
    tag = image_tag(repo=repo)
    if not force and image_exists(tag):
        latest_id = _out(["docker", "image", "inspect", "-f", "{{.Id}}", image], check=False)
        tag_id = _out(["docker", "image", "inspect", "-f", "{{.Id}}", tag])
        if latest_id != tag_id:
            _run(["docker", "tag", tag, image])
        if not quiet:
            print(f"image {image} is up to date ({tag})")
        return image
    if os.geteuid() != 0:
        raise LabError("building the base image needs root (debootstrap); run it as root")
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is missing; run scripts/setup-host.sh (as root)")
    started = time.monotonic()
    print(f"building {image} ({tag}) with debootstrap {SUITE} minbase ...", flush=True)
    tmp_parent = os.environ.get("HOSTMESH_BUILD_DIR") or None
    with tempfile.TemporaryDirectory(prefix="hostmesh-rootfs-", dir=tmp_parent) as tmp:
        rootfs = os.path.join(tmp, "rootfs")
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             SUITE, rootfs, MIRROR],
            capture_output=True, check=False,
        )
        if proc.returncode != 0:
            log = (proc.stdout + proc.stderr).decode(errors="replace")[-3000:]
            raise LabError(f"debootstrap failed (exit {proc.returncode}):\n{log}")
        _tune_rootfs(rootfs)
        tar = subprocess.Popen(["tar", "-C", rootfs, "--numeric-owner", "-c", "."],
                               stdout=subprocess.PIPE)
        imp = subprocess.run(
            ["docker", "import",
             "-c", 'CMD ["/sbin/init"]',
             "-c", "ENV container=docker",
             "-c", f"LABEL hostmesh.packages={package_hash()}",
             "-", tag],
            stdin=tar.stdout, capture_output=True, check=False,
        )
        tar.stdout.close()
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise LabError(f"docker import failed: {imp.stderr.decode(errors='replace')}")
    _run(["docker", "tag", tag, image])
    print(f"built {image} ({tag}) in {time.monotonic() - started:.1f}s", flush=True)
    return image


def _tune_rootfs(rootfs: str) -> None:
    """Make the debootstrapped tree a quiet container root."""
    # Drop the apt cache and docs: smaller image, faster import.
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        path = os.path.join(rootfs, sub)
        for name in os.listdir(path) if os.path.isdir(path) else []:
            full = os.path.join(path, name)
            if os.path.isfile(full):
                os.unlink(full)
    for sub in ("usr/share/doc", "usr/share/man", "usr/share/info"):
        shutil.rmtree(os.path.join(rootfs, sub), ignore_errors=True)
        os.makedirs(os.path.join(rootfs, sub), exist_ok=True)
    with open(os.path.join(rootfs, "etc/apt/sources.list"), "w") as fh:
        fh.write(f"deb {MIRROR} {SUITE} main\n"
                 f"deb {MIRROR} {SUITE}-updates main\n"
                 f"deb http://security.debian.org/debian-security {SUITE}-security main\n")
    # Units that make no sense (or hang) in a container.
    wants = os.path.join(rootfs, "etc/systemd/system")
    for unit in ("systemd-networkd-wait-online.service", "getty@tty1.service",
                 "console-getty.service", "systemd-timesyncd.service",
                 "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                 "fstrim.timer", "systemd-remount-fs.service",
                 "dev-hugepages.mount", "sys-kernel-debug.mount",
                 "sys-kernel-tracing.mount", "sys-fs-fuse-connections.mount",
                 "systemd-modules-load.service"):
        link = os.path.join(wants, unit)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink("/dev/null", link)
    # Docker Engine stays off until hostmesh.cluster.apps enables it on a node that
    # runs apps (not masked: the role must be able to start it).
    for link in ("multi-user.target.wants/docker.service", "sockets.target.wants/docker.socket",
                 "multi-user.target.wants/containerd.service"):
        path = os.path.join(wants, link)
        if os.path.lexists(path):
            os.unlink(path)
    # An empty machine-id is filled at boot, so every container gets its own.
    with open(os.path.join(rootfs, "etc/machine-id"), "w"):
        pass
    dbus_id = os.path.join(rootfs, "var/lib/dbus/machine-id")
    if os.path.lexists(dbus_id):
        os.unlink(dbus_id)
    # Docker manages these.
    for name in ("etc/hostname", "etc/resolv.conf"):
        path = os.path.join(rootfs, name)
        if os.path.lexists(path):
            os.unlink(path)
    _ssh_rootfs(rootfs)


HOST_KEYS_UNIT = "hostmesh-ssh-host-keys.service"


def _ssh_rootfs(rootfs: str) -> None:
    """sshd without host keys (each container makes its own), and the lab user."""
    # openssh-server's postinst generated host keys while debootstrap ran:
    # baked in, every container would share them. ssh-keygen -A at boot makes
    # the missing ones, so each container gets its own on first start and
    # keeps them across restarts.
    ssh_dir = os.path.join(rootfs, "etc/ssh")
    for name in os.listdir(ssh_dir):
        if name.startswith("ssh_host_"):
            os.unlink(os.path.join(ssh_dir, name))
    system = os.path.join(rootfs, "etc/systemd/system")
    with open(os.path.join(system, HOST_KEYS_UNIT), "w") as fh:
        fh.write("[Unit]\n"
                 "Description=SSH host keys of this container (the image holds none)\n"
                 "Before=ssh.service\n"
                 "[Service]\n"
                 "Type=oneshot\n"
                 "ExecStart=/usr/bin/ssh-keygen -A\n"
                 "RemainAfterExit=yes\n"
                 "[Install]\n"
                 "RequiredBy=ssh.service\n")
    requires = os.path.join(system, "ssh.service.requires")
    os.makedirs(requires, exist_ok=True)
    link = os.path.join(requires, HOST_KEYS_UNIT)
    if not os.path.lexists(link):
        os.symlink(f"/etc/systemd/system/{HOST_KEYS_UNIT}", link)
    with open(os.path.join(ssh_dir, "sshd_config.d", "hostmesh-lab.conf"), "w") as fh:
        fh.write("# hostmesh lab: keys only, no root login (as on a hardened server)\n"
                 "PasswordAuthentication no\n"
                 "KbdInteractiveAuthentication no\n"
                 "PermitRootLogin no\n")
    # The login user: locked password ('*'), key-only, passwordless sudo.
    proc = subprocess.run(
        ["useradd", "--root", rootfs, "--create-home", "--uid", str(LAB_UID), "--user-group",
         "--groups", "sudo", "--shell", "/bin/bash", "--password", "*", LAB_USER],
        capture_output=True, check=False,
    )
    if proc.returncode != 0:
        raise LabError(f"useradd {LAB_USER} in the image failed: "
                       f"{proc.stderr.decode(errors='replace').strip()}")
    sudoers = os.path.join(rootfs, "etc/sudoers.d", f"90-{LAB_USER}")
    with open(sudoers, "w") as fh:
        fh.write(f"{LAB_USER} ALL=(ALL) NOPASSWD:ALL\n")
    os.chmod(sudoers, 0o440)


# ----------------------------------------------------------------------- ssh
class LabSsh:
    """The controller's SSH material for one lab, in one directory (0700):

    ``id_ed25519`` (+ ``.pub``), the key the controller logs in with, made
    once per lab; ``known_hosts``, the nodes' host keys, read from each
    container's console (``docker exec``) and keyed by the node's address,
    which is the inventory's ``ansible_host``.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def ssh_options(self) -> list[str]:
        """The options every lab inventory gives Ansible (ansible_ssh_common_args)."""
        return ["-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes"]

    def inventory_vars(self) -> dict:
        """Host vars that drive a lab node as a real server: SSH as the lab
        user with become, this lab's key, host keys checked against its
        known_hosts. ``ansible_host`` (the node's address) is the caller's."""
        return {
            "ansible_connection": "ssh",
            "ansible_user": LAB_USER,
            "ansible_become": True,
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": " ".join(self.ssh_options()),
            "hostmesh_lab": True,
        }

    def ensure_key(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        if self.key.exists() and self.key.with_suffix(".pub").exists():
            return
        for stale in (self.key, self.key.with_suffix(".pub")):
            stale.unlink(missing_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hostmesh-lab",
              "-f", str(self.key)])

    def provision(self, nodes: dict[str, str], timeout: float = 60.0) -> None:
        """Give each container (name -> address) the lab's public key, record
        its host keys, and wait until SSH logs in with both."""
        self.ensure_key()
        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            keys = list(pool.map(lambda c: self._install(c, timeout), nodes))
        self._record({nodes[c]: k for c, k in zip(nodes, keys)})
        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            list(pool.map(lambda a: self.wait(a, timeout), nodes.values()))

    def _install(self, container: str, timeout: float) -> list[str]:
        """Authorize the lab key for LAB_USER; return the container's host public keys."""
        pub = self.key.with_suffix(".pub").read_bytes()
        home = f"/home/{LAB_USER}/.ssh"
        script = (f"install -d -m 0700 -o {LAB_USER} -g {LAB_USER} {home}; "
                  f"cat > {home}/authorized_keys.new; "
                  f"chown {LAB_USER}:{LAB_USER} {home}/authorized_keys.new; "
                  f"chmod 0600 {home}/authorized_keys.new; "
                  f"mv {home}/authorized_keys.new {home}/authorized_keys")
        proc = _run(["docker", "exec", "-i", container, "sh", "-euc", script], input_=pub,
                    check=False)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            hint = (f" (its image predates the lab's SSH user {LAB_USER}: build the image "
                    "with `make image`, then recreate the container, e.g. `make lab-down "
                    "lab-up`)") if "invalid user" in err else ""
            raise LabError(f"could not install the lab's SSH key in {container}: {err}{hint}")
        deadline = time.monotonic() + timeout
        while True:
            proc = _run(["docker", "exec", container, "sh", "-c",
                         "cat /etc/ssh/ssh_host_*_key.pub"], check=False)
            lines = [ln for ln in proc.stdout.decode().splitlines() if ln.strip()]
            if proc.returncode == 0 and lines:
                return [" ".join(ln.split()[:2]) for ln in lines]
            if time.monotonic() > deadline:
                raise LabError(f"{container} has no SSH host keys after {timeout:.0f}s "
                               f"(is {HOST_KEYS_UNIT} in the image? rebuild it: "
                               "scripts/lab.py image --force)")
            time.sleep(0.5)

    def _record(self, host_keys: dict[str, list[str]]) -> None:
        """Replace the known_hosts lines of these addresses, keep the others."""
        kept = []
        if self.known_hosts.exists():
            kept = [ln for ln in self.known_hosts.read_text().splitlines()
                    if ln.split(" ", 1)[0] not in host_keys]
        lines = kept + [f"{addr} {key}" for addr, keys in host_keys.items() for key in keys]
        tmp = self.known_hosts.with_suffix(".tmp")
        tmp.write_text("".join(f"{ln}\n" for ln in lines))
        tmp.chmod(0o644)
        tmp.replace(self.known_hosts)

    def ssh_command(self, address: str, *command: str) -> list[str]:
        return ["ssh", "-i", str(self.key), *self.ssh_options(), "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=5", "-o", "ControlMaster=no", "-o", "ControlPath=none",
                f"{LAB_USER}@{address}", *command]

    def wait(self, address: str, timeout: float = 60.0) -> None:
        """Until `ssh admin@address sudo -n true` works with the recorded host key."""
        deadline = time.monotonic() + timeout
        while True:
            proc = _run(["timeout", "15", *self.ssh_command(address, "sudo", "-n", "true")],
                        check=False)
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                err = proc.stderr.decode(errors="replace").strip()
                raise LabError(f"ssh {LAB_USER}@{address} does not work after "
                               f"{timeout:.0f}s: {err}")
            time.sleep(0.5)


# ----------------------------------------------------------------------- lab
@dataclass
class Lab:
    """A set of node containers on their own Docker network.

    Container ``i`` (0-based) is ``<prefix><nodes[i]>`` at host address
    ``.(first_host + i)`` of ``subnet``.
    """

    prefix: str = "hostmesh-lab-"
    network: str = "hostmesh-lab"
    subnet: str = "10.231.1.0/24"
    nodes: list[str] = field(default_factory=lambda: ["node1", "node2", "node3"])
    image: str = IMAGE
    first_host: int = 11

    def container(self, node: str) -> str:
        return f"{self.prefix}{node}"

    def address(self, node: str) -> str:
        net = ipaddress.ip_network(self.subnet)
        return str(net.network_address + self.first_host + self.nodes.index(node))

    @property
    def containers(self) -> list[str]:
        return [self.container(n) for n in self.nodes]

    # ---- lifecycle
    def up(self, timeout: float = 120.0, ssh_dir: str | os.PathLike | None = None) -> None:
        """Start the nodes and wait for systemd; with ``ssh_dir``, also give
        them that lab's SSH key and record their host keys there (LabSsh)."""
        docker_available()
        if not image_exists(self.image):
            ensure_image()
        self._ensure_network()
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            list(pool.map(self._start_node, self.nodes))
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            states = list(pool.map(lambda n: self.wait_systemd(n, timeout), self.nodes))
        bad = [f"{n}: {s}" for n, s in zip(self.nodes, states) if s not in ("running", "degraded")]
        if bad:
            raise LabError("systemd did not come up in: " + ", ".join(bad))
        if ssh_dir is not None:
            self.ssh(ssh_dir).provision(
                {self.container(n): self.address(n) for n in self.nodes}, timeout)

    @staticmethod
    def ssh(ssh_dir: str | os.PathLike) -> LabSsh:
        return LabSsh(ssh_dir)

    def down(self) -> None:
        docker_available()
        existing = self._existing_containers()
        if existing:
            _run(["docker", "rm", "--force", "--volumes", *existing])
        if self._network_exists():
            _run(["docker", "network", "rm", self.network])

    def status(self) -> list[dict]:
        rows = []
        for node in self.nodes:
            name = self.container(node)
            proc = _run(["docker", "inspect", "-f", "{{.State.Status}}", name], check=False)
            state = proc.stdout.decode().strip() if proc.returncode == 0 else "absent"
            systemd = ""
            if state == "running":
                systemd = _out(["docker", "exec", name, "systemctl", "is-system-running"],
                               check=False)
            rows.append({"node": node, "container": name, "address": self.address(node),
                         "state": state, "systemd": systemd})
        return rows

    def wait_systemd(self, node: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        name = self.container(node)
        state = "unknown"
        while time.monotonic() < deadline:
            proc = _run(["timeout", str(max(1, int(deadline - time.monotonic()))),
                         "docker", "exec", name, "systemctl", "is-system-running", "--wait"],
                        check=False)
            state = proc.stdout.decode().strip() or "unknown"
            if state in ("running", "degraded"):
                return state
            time.sleep(0.5)
        return state

    # ---- helpers
    def _network_exists(self) -> bool:
        return _run(["docker", "network", "inspect", self.network], check=False).returncode == 0

    def _ensure_network(self) -> None:
        if self._network_exists():
            current = _out(["docker", "network", "inspect", "-f",
                            "{{range .IPAM.Config}}{{.Subnet}}{{end}}", self.network])
            if current != self.subnet:
                raise LabError(
                    f"docker network {self.network} exists with subnet {current}, "
                    f"expected {self.subnet}; remove it (`docker network rm {self.network}`)"
                )
            return
        _run(["docker", "network", "create", "--label", LAB_LABEL,
              "--subnet", self.subnet, self.network])

    def _existing_containers(self) -> list[str]:
        out = _out(["docker", "ps", "-a", "--format", "{{.Names}}"])
        names = set(out.split())
        return [c for c in self.containers if c in names]

    def _start_node(self, node: str) -> None:
        name = self.container(node)
        proc = _run(["docker", "inspect", "-f", "{{.State.Running}}", name], check=False)
        if proc.returncode == 0:
            if proc.stdout.decode().strip() != "true":
                _run(["docker", "start", name])
            return
        _run(["docker", "run", "-d", "--name", name, "--hostname", node,
              "--label", LAB_LABEL, "--network", self.network, "--ip", self.address(node),
              *RUN_OPTIONS, self.image, "/sbin/init"])


# ----------------------------------------------------------------------- CLI
def _lab_from_args(args: argparse.Namespace) -> Lab:
    return Lab(prefix=args.prefix, network=args.network, subnet=args.subnet,
               nodes=[n for n in args.nodes.split(",") if n])


DEFAULT_SSH_DIR = Path(__file__).resolve().parent.parent / "inventory" / "lab" / ".hostmesh" / "ssh"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab.py", description=__doc__.split("\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    img = sub.add_parser("image", help="build the base image when its package list changed")
    img.add_argument("--force", action="store_true", help="rebuild even when cached")
    img.add_argument("--print-tag", action="store_true", help="print the hash tag and exit")
    for name in ("up", "down", "status"):
        p = sub.add_parser(name)
        p.add_argument("--prefix", default="hostmesh-lab-")
        p.add_argument("--network", default="hostmesh-lab")
        p.add_argument("--subnet", default="10.231.1.0/24")
        p.add_argument("--nodes", default="node1,node2,node3")
        if name == "up":
            p.add_argument("--ssh-dir", default=str(DEFAULT_SSH_DIR),
                           help="the lab's SSH key and known_hosts (default: %(default)s)")
    ssh = sub.add_parser("ssh", help="give running containers the lab's SSH key and record "
                                     "their host keys (molecule's create uses it)")
    ssh.add_argument("--ssh-dir", required=True)
    ssh.add_argument("--timeout", type=float, default=60.0)
    ssh.add_argument("nodes", nargs="+", metavar="CONTAINER=ADDRESS")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "image":
            if args.print_tag:
                print(image_tag())
                return 0
            ensure_image(force=args.force)
        elif args.cmd == "up":
            lab = _lab_from_args(args)
            started = time.monotonic()
            lab.up(ssh_dir=args.ssh_dir)
            print(f"lab up: {', '.join(lab.containers)} on {lab.network} ({lab.subnet}) "
                  f"in {time.monotonic() - started:.1f}s")
        elif args.cmd == "ssh":
            pairs = [n.partition("=") for n in args.nodes]
            bad = [n for n, sep, addr in pairs if not sep or not addr]
            if bad:
                raise LabError(f"expected CONTAINER=ADDRESS, got {', '.join(bad)}")
            docker_available()
            LabSsh(args.ssh_dir).provision({n: a for n, _, a in pairs}, args.timeout)
            print(f"ssh ready: {', '.join(a for _, _, a in pairs)} "
                  f"(known_hosts: {LabSsh(args.ssh_dir).known_hosts})")
        elif args.cmd == "down":
            _lab_from_args(args).down()
            print("lab down")
        elif args.cmd == "status":
            for row in _lab_from_args(args).status():
                print(f"{row['node']:8} {row['container']:24} {row['address']:15} "
                      f"{row['state']:8} {row['systemd']}")
    except LabError as exc:
        print(f"lab.py {args.cmd}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
