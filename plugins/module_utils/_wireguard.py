# Private to the hostmesh.cluster collection: may change without notice.
"""WireGuard helpers shared by the wireguard modules and filters.

Standard library only: the modules that import this run under a node's
system Python, which may have nothing else installed.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re

# --- Curve25519 (RFC 7748), so a key pair needs neither `wg` nor a C library.

_P = 2**255 - 19
_A24 = 121665
_BASEPOINT = (9).to_bytes(32, "little")


def _clamp(scalar: bytes) -> int:
    b = bytearray(scalar)
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return int.from_bytes(bytes(b), "little")


def x25519(scalar: bytes, u_bytes: bytes) -> bytes:
    """Return X25519(scalar, u) as 32 little-endian bytes (RFC 7748, section 5)."""
    if len(scalar) != 32 or len(u_bytes) != 32:
        raise ValueError("X25519 needs a 32-byte scalar and a 32-byte u-coordinate")
    k = _clamp(scalar)
    u = bytearray(u_bytes)
    u[31] &= 127
    x1 = int.from_bytes(bytes(u), "little") % _P
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in reversed(range(255)):
        bit = (k >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a = (x2 + z2) % _P
        aa = a * a % _P
        b = (x2 - z2) % _P
        bb = b * b % _P
        e = (aa - bb) % _P
        c = (x3 + z3) % _P
        d = (x3 - z3) % _P
        da = d * a % _P
        cb = c * b % _P
        x3 = (da + cb) ** 2 % _P
        z3 = x1 * (da - cb) ** 2 % _P
        x2 = aa * bb % _P
        z2 = e * (aa + _A24 * e) % _P
    if swap:
        x2, x3, z2, z3 = x3, x2, z3, z2
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


def generate_private_key() -> str:
    """Return a new clamped Curve25519 private key, base64 encoded (like `wg genkey`)."""
    raw = bytearray(os.urandom(32))
    raw[0] &= 248
    raw[31] &= 127
    raw[31] |= 64
    return base64.b64encode(bytes(raw)).decode("ascii")


def generate_preshared_key() -> str:
    """Return 32 random bytes, base64 encoded (like `wg genpsk`)."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


def decode_key(key: str) -> bytes:
    """Decode a base64 WireGuard key; raise ValueError saying what is wrong."""
    text = (key or "").strip()
    if len(text) != 44 or not text.endswith("="):
        raise ValueError("a WireGuard key is 44 base64 characters ending with '='")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a WireGuard key must be valid base64") from exc
    if len(raw) != 32:
        raise ValueError("a WireGuard key decodes to exactly 32 bytes")
    return raw


def is_valid_key(key: object) -> bool:
    """Tell whether key is a well-formed base64 WireGuard key."""
    if not isinstance(key, str):
        return False
    try:
        decode_key(key)
    except ValueError:
        return False
    return True


def public_key(private_key: str) -> str:
    """Return the public key of a base64 private key (like `wg pubkey`)."""
    raw = decode_key(private_key)
    return base64.b64encode(x25519(raw, _BASEPOINT)).decode("ascii")


# --- wg-quick configuration


def format_endpoint(host: str, port: int) -> str:
    """Return host:port, bracketing IPv6 literals."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{int(port)}"


def render_config(interface: dict, peers: list, private_key: str) -> str:
    """Render a wg-quick configuration.

    interface: address (ip/prefix), listen_port, optional mtu.
    peers: dicts with name, public_key, allowed_ips (list), optional endpoint
    (host:port), preshared_key and persistent_keepalive. Peers are written in
    name order so the output depends only on the input.
    """
    lines = [
        "# Managed by Ansible (hostmesh.cluster.wireguard); local edits are overwritten.",
        "[Interface]",
        "Address = {}".format(interface["address"]),
        f"ListenPort = {int(interface['listen_port'])}",
    ]
    if interface.get("mtu"):
        lines.append(f"MTU = {int(interface['mtu'])}")
    lines.append(f"PrivateKey = {private_key}")
    for peer in sorted(peers, key=lambda p: (p.get("name") or "", p["public_key"])):
        lines.append("")
        if peer.get("name"):
            lines.append("# {}".format(peer["name"]))
        lines.append("[Peer]")
        lines.append("PublicKey = {}".format(peer["public_key"]))
        if peer.get("preshared_key"):
            lines.append("PresharedKey = {}".format(peer["preshared_key"]))
        lines.append("AllowedIPs = {}".format(", ".join(peer["allowed_ips"])))
        if peer.get("endpoint"):
            lines.append("Endpoint = {}".format(peer["endpoint"]))
        if peer.get("persistent_keepalive"):
            lines.append(f"PersistentKeepalive = {int(peer['persistent_keepalive'])}")
    return "\n".join(lines) + "\n"


_SECRET_LINE = re.compile(
    r"^(\s*(?:PrivateKey|PresharedKey)\s*=\s*).*$", re.IGNORECASE | re.MULTILINE
)


def redact_config(text: str) -> str:
    """Replace every private and preshared key of a config with a marker."""
    return _SECRET_LINE.sub(r"\1<hidden>", text or "")


def parse_sections(text: str) -> list:
    """Parse a wg-quick config into [(section, [(key, value), ...]), ...], comments dropped."""
    sections = []
    for raw in (text or "").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1].strip().lower(), []))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1][1].append((key.strip().lower(), value.strip()))
    return sections


def interface_section(text: str) -> list:
    """Return the key/value pairs of the [Interface] section (empty when absent)."""
    for name, items in parse_sections(text):
        if name == "interface":
            return items
    return []


# --- Mesh planning (runs on the controller, from the inventory)


def _parse_subnet(subnet: str):
    try:
        return ipaddress.ip_network(str(subnet), strict=True)
    except ValueError as exc:
        raise ValueError(
            f"wireguard_subnet {subnet!r} is not a network address in CIDR form ({exc}); "
            "use e.g. 10.50.0.0/24"
        ) from exc


def _parse_address(value):
    text = str(value).strip()
    if "/" in text:
        iface = ipaddress.ip_interface(text)
        return iface.ip
    return ipaddress.ip_address(text)


def _usable(net) -> list:
    if net.num_addresses <= 2:
        return list(net)
    return list(net.hosts())


def mesh_errors(nodes: list, subnet: str, state: dict | None = None) -> list:
    """Return every problem of a mesh definition as a message naming host and value.

    nodes: dicts with name, address ('' when allocated), endpoint ('' when none),
    port and keepalive, as built from the inventory.
    state: the controller-side record (wireguard.json) or {}.
    """
    errors = []
    try:
        net = _parse_subnet(subnet)
    except ValueError as exc:
        return [str(exc)]
    usable = set(_usable(net))
    seen_addr = {}
    seen_endpoint = {}
    for node in sorted(nodes, key=lambda n: n["name"]):
        name = node["name"]
        address = node.get("address")
        if address not in (None, ""):
            try:
                ip = _parse_address(address)
            except ValueError:
                errors.append(
                    f"{name}: wireguard_address {address!r} is not an IP address; set a free address "
                    f"in {net} or remove it to get one allocated"
                )
                ip = None
            if ip is not None:
                if ip.version != net.version or ip not in net:
                    errors.append(
                        f"{name}: wireguard_address {ip} is outside wireguard_subnet {net}; "
                        "pick an address inside it"
                    )
                elif ip not in usable:
                    errors.append(
                        f"{name}: wireguard_address {ip} is the network or broadcast address "
                        f"of {net}; pick a host address"
                    )
                elif ip in seen_addr:
                    errors.append(
                        f"{name}: wireguard_address {ip} is already used by {seen_addr[ip]}; every node needs "
                        "its own address"
                    )
                else:
                    seen_addr[ip] = name
        port = node.get("port")
        try:
            port_ok = 1 <= int(port) <= 65535
        except (TypeError, ValueError):
            port_ok = False
        if not port_ok:
            errors.append(f"{name}: wireguard_port {port!r} is not a UDP port (1-65535)")
        keepalive = node.get("keepalive", 0)
        try:
            keep_ok = 0 <= int(keepalive or 0) <= 65535
        except (TypeError, ValueError):
            keep_ok = False
        if not keep_ok:
            errors.append(
                f"{name}: wireguard_persistent_keepalive {keepalive!r} must be 0 (off) or seconds up to 65535"
            )
        endpoint = node.get("endpoint")
        if endpoint and port_ok:
            key = format_endpoint(str(endpoint).strip("[]"), int(port))
            if key in seen_endpoint:
                errors.append(
                    f"{name}: endpoint {key} is also the endpoint of {seen_endpoint[key]}; set wireguard_endpoint or "
                    "wireguard_port so each node is reached at its own address"
                )
            else:
                seen_endpoint[key] = name
    recorded = (state or {}).get("nodes") or {}
    if not isinstance(recorded, dict):
        errors.append(
            f"the mesh record lists nodes as {type(recorded).__name__!r}, not a mapping; fix or delete it"
        )
        recorded = {}
    # An explicit address must not take the recorded address of another node:
    # that node would be renumbered.
    allocated = {}
    for node in nodes:
        if node.get("address") in (None, ""):
            old = (recorded.get(node["name"]) or {}).get("address")
            try:
                allocated[_parse_address(old)] = node["name"]
            except (TypeError, ValueError):
                pass
    for ip, name in sorted(seen_addr.items()):
        if ip in allocated:
            errors.append(
                f"{name}: wireguard_address {ip} is already used by {allocated[ip]} (allocated earlier, see the mesh "
                f"record); pick a free address so {allocated[ip]} is not renumbered"
            )
    for name in sorted(recorded):
        entry = recorded[name] or {}
        key = entry.get("public_key")
        if key not in (None, "") and not is_valid_key(key):
            errors.append(
                f"{name}: recorded public key {key!r} in the mesh record is not a WireGuard key; "
                "delete the entry so it is read again from the node"
            )
    return errors


def allocate_addresses(nodes: list, subnet: str, state: dict | None = None) -> dict:
    """Return {name: address} for every node, stable across additions and removals.

    An explicit address wins; otherwise the address recorded in state is kept
    while it is still free and inside the subnet; the remaining nodes, in name
    order, get the lowest free host address.
    """
    net = _parse_subnet(subnet)
    usable = _usable(net)
    recorded = (state or {}).get("nodes") or {}
    result = {}
    taken = set()
    for node in nodes:
        if node.get("address") not in (None, ""):
            ip = _parse_address(node["address"])
            result[node["name"]] = ip
            taken.add(ip)
    pending = []
    for node in sorted(nodes, key=lambda n: n["name"]):
        name = node["name"]
        if name in result:
            continue
        old = (recorded.get(name) or {}).get("address")
        ip = None
        if old:
            try:
                ip = _parse_address(old)
            except ValueError:
                ip = None
        if ip is not None and ip in net and ip in set(usable) and ip not in taken:
            result[name] = ip
            taken.add(ip)
        else:
            pending.append(name)
    free = (ip for ip in usable if ip not in taken)
    for name in pending:
        ip = next(free, None)
        if ip is None:
            raise ValueError(
                f"wireguard_subnet {net} has no free address left for {name}; use a larger subnet"
            )
        result[name] = ip
        taken.add(ip)
    return {name: str(ip) for name, ip in result.items()}


def mesh_plan(nodes: list, subnet: str, state: dict | None, public_keys: dict) -> dict:
    """Return the new controller-side record: subnet plus, per node, address and public key.

    A node whose public key is unknown (never converged, no record) keeps its
    address but gets public_key null, so peers leave it out until it has one.
    """
    addresses = allocate_addresses(nodes, subnet, state)
    recorded = (state or {}).get("nodes") or {}
    out = {}
    for node in sorted(nodes, key=lambda n: n["name"]):
        name = node["name"]
        key = public_keys.get(name) or (recorded.get(name) or {}).get("public_key") or None
        endpoint = node.get("endpoint") or ""
        out[name] = {
            "address": addresses[name],
            "public_key": key,
            "endpoint": format_endpoint(str(endpoint), int(node["port"])) if endpoint else "",
            "port": int(node["port"]),
        }
    net = _parse_subnet(subnet)
    return {"version": 1, "subnet": str(net), "prefix": net.prefixlen, "nodes": out}


def psk_pairs(names: list) -> list:
    """Return the sorted 'a_b' pair names (a < b) of every pair of nodes."""
    names = sorted(set(names))
    return [f"{a}_{b}" for i, a in enumerate(names) for b in names[i + 1 :]]


def pair_name(a: str, b: str) -> str:
    """Return the pair name of two nodes, independent of their order."""
    return "_".join(sorted([a, b]))


def peers_for(plan: dict, me: str, keepalive: int = 0, psks: dict | None = None) -> list:
    """Return the peer list of node `me`: every other node of the plan with a public key."""
    psks = psks or {}
    peers = []
    for name, node in sorted((plan.get("nodes") or {}).items()):
        if name == me or not node.get("public_key"):
            continue
        address = ipaddress.ip_address(node["address"])
        peer = {
            "name": name,
            "public_key": node["public_key"],
            "allowed_ips": [f"{address}/{address.max_prefixlen}"],
            "endpoint": node.get("endpoint") or None,
            "persistent_keepalive": int(keepalive or 0) or None,
            "preshared_key": psks.get(pair_name(me, name)) or None,
        }
        peers.append(peer)
    return peers
