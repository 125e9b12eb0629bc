"""Renewals driven by the issuer's own schedule, with short-lived certificates, under
continuous HTTPS load through three real Traefiks: no request fails (issue 15).

Loopback only. pebble issues certificates valid for VALIDITY seconds (its
certificateValidityPeriod, the test CA's setting the issue names); the issuer runs
one pass every TICK seconds with the real clock, as hostmesh-acme.timer runs
`hostmesh acme renew`, and renews when a pass finds two-thirds of the lifetime gone
(nothing is forced, no clock is faked); every pass that issued hands the pair to
the three Traefiks with hostmesh.tls.deploy (the hand-over the primary's pass and
the agents' installer use). Every request is a new TLS connection verified against
pebble's root for whoami.lab.test. The same drill on a real lab, with the real
timer and the agents carrying the pair: bench/tls_renewal_drill.py.
"""

from __future__ import annotations

import itertools
import ssl
import time

import pytest
from traefik_world import HOST, HTTPS_PORT, HttpsLoad, lab_acme, traefik_world

from hostmesh.tls import deploy
from hostmesh.tls.issuer import Issuer

ADDRESSES = {f"node{i}": f"127.16.0.{10 + i}" for i in (1, 2, 3)}
VALIDITY = 30  # seconds: a renewal every 20 s (an order ~1.5 s, Traefik reloads ~2 s)
TICK = 1.0  # seconds between the issuer's passes (the timer)
RENEWALS = 2


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with traefik_world(tmp_path_factory.mktemp("tls-schedule"), ADDRESSES, validity=VALIDITY) as world:
        yield world


def test_scheduled_renewals_under_load_fail_no_request(world):
    root = world["pebble"].root_pem()
    nodes = world["nodes"]
    issued: list[dict] = []  # what each pass that issued reported, in order

    def one_pass() -> None:
        st = Issuer(world["cfg"]).run_once()["sets"]["lab.test"]
        if not issued or st["serial"] != issued[-1]["serial"]:
            for node in nodes.values():
                deploy.install(deploy.from_issuer(world["cfg"].state_dir, ["lab.test"]),
                               node.dir / "tls", node.dynamic)
            issued.append({**st, "handed_at": time.time()})

    one_pass()
    first = issued[0]
    wait = time.monotonic() + 15  # Traefik's first load of the pair (no load yet)
    for name in nodes:
        while True:
            try:
                if lab_acme.https_get(ADDRESSES[name], HTTPS_PORT, HOST,
                                      cadata=root)[2] == first["serial"]:
                    break
            except (OSError, ssl.SSLError):
                pass
            assert time.monotonic() < wait, f"{name} does not serve the first certificate"
            time.sleep(0.1)
    assert first["not_after"] - first["not_before"] == pytest.approx(VALIDITY, abs=2), first
    pids = {n: node.proc.pid for n, node in nodes.items()}
    deadline = time.monotonic() + (RENEWALS + 1) * VALIDITY
    with HttpsLoad(ADDRESSES, root) as load:
        while time.monotonic() < deadline and (
                len(issued) < RENEWALS + 1
                or len(load.seen.get(issued[-1]["serial"], {})) < len(nodes)):
            time.sleep(TICK)
            one_pass()
        time.sleep(1)  # the last one served a while
    results, seen = load.results, load.seen
    assert len(issued) == RENEWALS + 1, f"{len(issued) - 1} renewals in {(RENEWALS + 1) * VALIDITY} s"
    serials = [st["serial"] for st in issued]
    failures = [r for r in results if r[1] not in serials]
    assert not failures, (failures[:3], len(failures), issued, time.time())
    assert len(results) > 100
    for before, after in itertools.pairwise(issued):
        # the schedule: each renewal at two-thirds of the previous lifetime (plus a tick
        # and the order), long before the previous certificate ended
        lifetime = before["not_after"] - before["not_before"]
        at = (after["issued_at"] - before["not_before"]) / lifetime
        assert 0.66 <= at < 0.66 + (TICK + 3) / lifetime, (at, before, after)
        assert after["orders"] == before["orders"] + 1
        # served by every node within one renewal period, well before the old one ends
        served = seen.get(after["serial"], {})
        assert set(served) == set(nodes), (after["serial"], served)
        spread = max(served.values()) - after["handed_at"]
        print(f"tls_schedule_seconds_to_every_node: {spread:.2f} s (renewal at {at:.2f} of "
              f"the lifetime; issued {after['issued_at'] - before['not_before']:.1f} s, "
              f"handed {after['handed_at'] - before['not_before']:.1f} s after the previous "
              f"one's notBefore; {before['not_after'] - max(served.values()):.1f} s before it ended)")
        assert spread < lifetime * 2 / 3 and max(served.values()) < before["not_after"], (before, after, served)
    print(f"tls_schedule_requests: {len(results)} requests, 0 failed, "
          f"{len(issued) - 1} renewals")
    assert {n: node.proc.pid for n, node in nodes.items()} == pids  # no restart
