#!/usr/bin/env bash
# Make a Debian host ready for hostmesh development, the lab and CI:
#   - Debian packages: docker.io, debootstrap, wireguard-tools, openssh-client, python3-venv,
#     and for tests openssh-server (its system service is left stopped and
#     disabled: tests start their own sshd on 127.0.0.1), tcpdump and pebble (an
#     ACME test CA, run by tests and the lab, never as a system service),
#     docker-registry (the lab's image registry, run by scripts/lab_registry.py,
#     never as a system service) and gcc (the lab's static demo app)
#   - the Docker engine running (dockerd started in the background if needed)
#   - .venv with the project installed (`pip install -e '.[dev]'`), refreshed
#     only when pyproject.toml changed (stamp file .venv/.hostmesh-setup)
# Idempotent and silent when nothing is missing. When something is missing
# and cannot be installed (not root, no apt-get) it says exactly what and how
# to get it, and exits 1 without changing anything.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HOSTMESH_VENV:-$ROOT/.venv}"
STAMP="$VENV/.hostmesh-setup"
PYTHON="${PYTHON:-python3}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"

say() { printf 'setup-host: %s\n' "$*" >&2; }
die() { printf 'setup-host: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# ---------------------------------------------------------------- packages
# command that proves the package is there -> Debian package providing it
declare -A WANT=(
  [docker]=docker.io
  [dockerd]=docker.io
  [debootstrap]=debootstrap
  [wg]=wireguard-tools
  [ssh]=openssh-client  # the controller drives lab nodes over SSH
  [ssh-keygen]=openssh-client
  [sshd]=openssh-server   # the SSH-tunnel test starts a throwaway sshd on 127.0.0.1
  [tcpdump]=tcpdump       # the lab's packet-capture test
  [pebble]=pebble         # the lab's ACME test CA (scripts/lab_acme.py, tests/integration/tls)
  [docker-registry]=docker-registry  # the lab's image registry (scripts/lab_registry.py)
  [gcc]=gcc               # builds the lab's static demo app (lab/whoami/whoami.c)
)
missing_pkgs=()
for cmd in docker dockerd debootstrap wg ssh ssh-keygen sshd tcpdump pebble docker-registry gcc; do
  # debootstrap and dockerd live in /usr/sbin, often not on a user's PATH
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    pkg="${WANT[$cmd]}"
    [[ " ${missing_pkgs[*]-} " == *" $pkg "* ]] || missing_pkgs+=("$pkg")
  fi
done
# gcc links the lab's demo app statically: it needs libc.a (a recommends of gcc).
dpkg -s libc6-dev >/dev/null 2>&1 || missing_pkgs+=(libc6-dev)
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  missing_pkgs+=(python3 python3-venv)
elif ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  die "$PYTHON is $("$PYTHON" -V 2>&1); hostmesh needs Python >= 3.10 (Debian 12 has 3.11). Set PYTHON=/path/to/python3.11 and re-run."
elif [ ! -x "$VENV/bin/python" ] && ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing_pkgs+=(python3-venv)
fi

if [ "${#missing_pkgs[@]}" -gt 0 ]; then
  if ! is_root; then
    die "missing: ${missing_pkgs[*]}. Install them as root:
    sudo apt-get install -y ${missing_pkgs[*]}
or run this script as root: sudo $0"
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    die "missing: ${missing_pkgs[*]} and there is no apt-get on this host (hostmesh's lab expects Debian 12).
Install the equivalents with your package manager (Docker engine + CLI, debootstrap, wireguard-tools, Python 3.10+ with venv) and re-run."
  fi
  say "installing ${missing_pkgs[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  # openssh-server must not start a system sshd on this host: only its binary is
  # wanted (tests run their own on 127.0.0.1). A temporary policy-rc.d keeps
  # the package scripts from starting any service.
  policy_rc=""
  if [[ " ${missing_pkgs[*]} " == *" openssh-server "* || " ${missing_pkgs[*]} " == *" docker-registry "* ]] \
     && [ ! -e /usr/sbin/policy-rc.d ]; then
    policy_rc=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$policy_rc"
    chmod 0755 "$policy_rc"
    trap 'rm -f "$policy_rc"' EXIT
  fi
  if ! apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
  fi
  if [[ " ${missing_pkgs[*]} " == *" openssh-server "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --quiet ssh.service >/dev/null 2>&1 || true
  fi
  if [[ " ${missing_pkgs[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --quiet docker-registry.service >/dev/null 2>&1 || true
  fi
  if [ -n "$policy_rc" ]; then
    rm -f "$policy_rc"
    trap - EXIT
  fi
fi

# ------------------------------------------------------------ docker engine
docker_answers() { timeout 10 docker info >/dev/null 2>&1; }

if ! docker_answers; then
  err="$(timeout 10 docker info 2>&1 | grep -i -m1 'permission denied' || true)"
  if [ -n "$err" ]; then
    die "the Docker engine runs but $(id -un) may not use it:
    ${err#ERROR: }
Add the user to the docker group (sudo usermod -aG docker $(id -un), then log in again) or run as root."
  fi
  if ! is_root; then
    die "the Docker engine is not running and only root can start it.
Start it as root: sudo $0   (or: sudo dockerd >$DOCKERD_LOG 2>&1 &)"
  fi
  DOCKERD="$(command -v dockerd || echo /usr/sbin/dockerd)"
  say "starting dockerd (log: $DOCKERD_LOG)"
  # Close every inherited descriptor above stderr first: dockerd outlives this
  # script and would otherwise keep open a lock the caller holds (for example
  # `flock /tmp/hostmesh-heavy.lock make image`) until the machine restarts.
  (
    for fd in $(ls /proc/$BASHPID/fd); do
      [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done
    exec nohup "$DOCKERD" >>"$DOCKERD_LOG" 2>&1 </dev/null
  ) &
  for _ in $(seq 1 120); do
    docker_answers && break
    if ! kill -0 "$!" 2>/dev/null; then
      die "dockerd exited at once; see the end of $DOCKERD_LOG:
$(tail -n 15 "$DOCKERD_LOG")"
    fi
    sleep 0.5
  done
  docker_answers || die "dockerd started but did not answer within 60 s; see $DOCKERD_LOG"
fi

# ---------------------------------------------------------------- virtualenv
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  # An existing venv may already hold everything (for example made by hand):
  # only run pip when a requirement of pyproject.toml is not satisfied.
  if ! "$VENV/bin/python" "$ROOT/scripts/check_requirements.py" "$ROOT/pyproject.toml" dev \
      >/dev/null 2>&1; then
    say "installing hostmesh and its dev dependencies into $VENV (pip install -e '.[dev]')"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]"
    "$VENV/bin/python" "$ROOT/scripts/check_requirements.py" "$ROOT/pyproject.toml" dev \
      || die "pip finished but the requirements above are still not satisfied"
  fi
  printf '%s\n' "$want" >"$STAMP"
fi
