# Private to the collection: may change without notice.
"""An SSH local forward to the primary's API, made with the user's own ``ssh``.

Used by the ``hostmesh.cluster.nodes`` inventory plugin when the controller is
outside the mesh: the agent's API listens only on the mesh and on loopback, so
the plugin asks the primary's own sshd to carry the request to its loopback
address. Nothing here needs root, and the admin token only ever travels inside
the SSH connection.

The tunnel is ``ssh -N -L 127.0.0.1:<free port>:<api host>:<api port> host``
with the user's SSH configuration (keys, agent, ProxyJump, known_hosts) plus
options that make it safe to run unattended: ``BatchMode=yes`` (never a
prompt), ``ExitOnForwardFailure=yes`` (no silent half-tunnel),
``StrictHostKeyChecking=yes`` (given first, so neither ``~/.ssh/config`` nor
extra arguments can turn host key checking off) and its own connection
(``ControlPath=none``), which is always closed.
"""

from __future__ import annotations

import math
import re
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager


class TunnelError(Exception):
    """The tunnel could not be used; the message says why and what to do."""

    #: True when the primary's host could just not be reached (a cached copy may stand in);
    #: False for a refusal that must stop the run (host key changed, authentication refused).
    unreachable = False


class SshFailed(TunnelError):
    """``ssh`` exited (or never connected): its own words are in the message."""


class ApiSilent(TunnelError):
    """``ssh`` connected, but nothing answers at the API's address on the far side."""

    unreachable = True


# Options of the ssh client that the tunnel refuses in ssh_args: they would
# detach ssh from the plugin (it must close what it opens) or run something else.
_REFUSED_FLAGS = {"-f": "puts ssh in the background, so the tunnel could not be closed",
                  "-W": "replaces the tunnel by a stdio forward",
                  "-O": "controls a multiplexing master instead of opening a tunnel",
                  "-G": "only prints the configuration",
                  "-V": "only prints the version"}
# ssh's one-letter options that take a value (ssh(1)): the rest of the argument,
# or the next one, is that value and no flag
_VALUE_FLAGS = set("BbcDEeFIiJLlmOopQRSWw")
_STRICT = re.compile(r"^stricthostkeychecking[= ]\s*(\S+)$", re.IGNORECASE)
_NETWORK_ERRORS = re.compile(
    r"Connection timed out|Connection refused|No route to host|Network is unreachable|"
    r"Could not resolve hostname|Name or service not known|Temporary failure in name resolution|"
    r"did not connect",
    re.IGNORECASE,
)
_BIND_ERRORS = re.compile(r"Address already in use|cannot listen to port", re.IGNORECASE)


def parse_args(ssh_args: str | Sequence[str] | None) -> list[str]:
    """Extra ssh arguments (a shell-like string or a list), checked.

    Raises TunnelError for arguments that would turn host key checking off or
    detach ssh from the caller.
    """
    if not ssh_args:
        return []
    try:
        args = shlex.split(ssh_args) if isinstance(ssh_args, str) else [str(a) for a in ssh_args]
    except ValueError as exc:
        raise TunnelError(f"ssh_args cannot be split like a shell would: {exc}") from None
    options = []  # every -o value, whether written "-o X", "-oX" or "-4oX"
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            continue
        # a cluster of one-letter flags ("-Cf"); a flag that takes a value ends it
        for pos, flag in enumerate(arg[1:], start=1):
            if "-" + flag in _REFUSED_FLAGS:
                raise TunnelError(
                    f"ssh_args must not contain -{flag}: it {_REFUSED_FLAGS['-' + flag]}")
            if flag in _VALUE_FLAGS:
                value = arg[pos + 1:]
                if not value and index < len(args):
                    value = args[index]
                    index += 1
                if flag == "o":
                    options.append(value)
                break
    for option in options:
        match = _STRICT.match(option.strip())
        if match and match.group(1).lower() != "yes":
            raise TunnelError(
                f"ssh_args sets StrictHostKeyChecking={match.group(1)}: the tunnel always checks "
                "the primary's host key. Record it in a known_hosts file instead (for example "
                "compare `ssh-keyscan <host>` with the key the server shows on its console) and "
                "point ssh at it with -o UserKnownHostsFile=<file>"
            )
    return args


def build_command(
    host: str,
    *,
    local_port: int,
    remote_host: str,
    remote_port: int,
    user: str | None = None,
    port: int | None = None,
    args: Sequence[str] = (),
    connect_timeout: float = 5,
    ssh: str = "ssh",
) -> list[str]:
    """The ssh command line of one tunnel (options first: for ssh the first value wins)."""
    if not host or host.startswith("-"):
        raise TunnelError(f"ssh_host {host!r} is not a host name or address")
    target = f"[{remote_host}]" if ":" in remote_host else remote_host
    cmd = [
        ssh, "-N",
        "-o", "BatchMode=yes",
        "-o", "ExitOnForwardFailure=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"ConnectTimeout={max(1, math.ceil(connect_timeout))}",
        "-o", "ControlMaster=no",
        "-o", "ControlPath=none",
        "-o", "ServerAliveInterval=5",
        "-L", f"127.0.0.1:{local_port}:{target}:{remote_port}",
    ]
    if port:
        cmd += ["-p", str(int(port))]
    if user:
        cmd += ["-l", user]
    return [*cmd, *args, "--", host]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _stderr_text(raw: bytes | None, limit: int = 12) -> str:
    lines = [ln.strip() for ln in (raw or b"").decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("@@@@")]
    return " | ".join(lines[-limit:]) or "no message"


def _close(proc: subprocess.Popen) -> bytes:
    """Stop ssh (the tunnel) and return what it wrote to stderr (idempotent)."""
    cached = getattr(proc, "_hostmesh_stderr", None)
    if cached is not None:
        return cached
    if proc.poll() is None:
        proc.terminate()
    try:
        err = proc.communicate(timeout=5)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        err = proc.communicate()[1]
    proc._hostmesh_stderr = err or b""
    return proc._hostmesh_stderr


@contextmanager
def ssh_tunnel(
    host: str,
    *,
    remote_host: str,
    remote_port: int,
    probe: Callable[[int], None],
    user: str | None = None,
    port: int | None = None,
    ssh_args: str | Sequence[str] | None = None,
    timeout: float = 5,
    ssh: str = "ssh",
) -> Iterator[int]:
    """Open the tunnel, wait until ``probe(local_port)`` succeeds, yield the local port.

    ``probe`` raises any exception while the API does not answer yet. The tunnel
    is closed when the block ends, whatever happens in it.
    """
    args = parse_args(ssh_args)
    where = f"{user + '@' if user else ''}{host}{':' + str(port) if port else ''}"
    api = f"{remote_host}:{remote_port}"
    for attempt in range(3):
        local_port = free_port()
        cmd = build_command(host, local_port=local_port, remote_host=remote_host,
                            remote_port=remote_port, user=user, port=port, args=args,
                            connect_timeout=timeout, ssh=ssh)
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise SshFailed(f"ssh failed: cannot run {ssh!r}: {exc}; install an OpenSSH "
                            "client on this machine") from None
        try:
            connected_at = None
            deadline = time.monotonic() + timeout + 10  # connect + authenticate
            last_error = "no answer"
            while True:
                if proc.poll() is not None:
                    err = _close(proc)
                    if _BIND_ERRORS.search(err.decode("utf-8", "replace")) and attempt < 2:
                        break  # someone took the free port meanwhile: try another one
                    failure = SshFailed(f"ssh failed: {_stderr_text(err)} "
                                        f"(ssh to {where}; check your SSH configuration, "
                                        "the key and the primary's host key in known_hosts)")
                    failure.unreachable = bool(_NETWORK_ERRORS.search(err.decode("utf-8",
                                                                                 "replace")))
                    raise failure
                if connected_at is None and _accepts(local_port):
                    # the forward listens only once ssh has logged in
                    connected_at = time.monotonic()
                    deadline = connected_at + timeout
                if connected_at is not None:
                    try:
                        probe(local_port)
                    except Exception as exc:  # noqa: BLE001 - any failure: not answering yet
                        last_error = str(exc) or type(exc).__name__
                    else:
                        break
                if time.monotonic() > deadline:
                    err = _close(proc)
                    if connected_at is None:
                        failure = SshFailed(
                            f"ssh failed: ssh to {where} did not connect within "
                            f"{timeout + 10:.0f} s ({_stderr_text(err)})")
                        failure.unreachable = True
                        raise failure
                    raise ApiSilent(
                        f"the primary's API does not answer through the tunnel: ssh to {where} "
                        f"works, but nothing answers at {api} on that host within {timeout:g} s "
                        f"(ssh: {_stderr_text(err)}; last error: {last_error}). Is "
                        "hostmesh-agent running there, and is the url option the API's address "
                        "as the primary sees it (default http://127.0.0.1:8080)?"
                    )
                time.sleep(0.1)
            if proc.poll() is not None:
                continue  # the port was taken: next attempt
            yield local_port
            return
        finally:
            _close(proc)
    raise SshFailed(f"ssh failed: no free local port for the tunnel to {where} after 3 tries")
