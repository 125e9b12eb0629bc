#!/usr/bin/env python3
"""The hostmesh lab: base image and node containers.

Command line::

    scripts/lab.py image            build hostmesh-node:latest (cached by package-list hash)
    scripts/lab.py up [--prefix P --network N --subnet S --nodes node1,node2,node3]
    scripts/lab.py down [same options]
    scripts/lab.py status [same options]

Importable (pytest fixtures, bench scripts)::

    from lab import Lab, ensure_image
    lab = Lab(prefix="drill-", network="hostmesh-drill", subnet="10.231.6.0/24",
              nodes=["node1", "node2", "node3"])
    lab.up()      # containers <prefix><node> at .11, .12, ... ; waits for systemd
    lab.down()    # removes containers, their anonymous volumes and the network

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

IMAGE_REPO = "hostmesh-node"
IMAGE = f"{IMAGE_REPO}:latest"
SUITE = "bookworm"
MIRROR = os.environ.get("HOSTMESH_DEBIAN_MIRROR", "http://deb.debian.org/debian")

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
    data = "\n".join([SUITE, "minbase", *pkgs]).encode()
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
    def up(self, timeout: float = 120.0) -> None:
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
            lab.up()
            print(f"lab up: {', '.join(lab.containers)} on {lab.network} ({lab.subnet}) "
                  f"in {time.monotonic() - started:.1f}s")
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
