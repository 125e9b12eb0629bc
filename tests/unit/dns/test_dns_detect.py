"""Public-IP detection: parsing and the local trace endpoint."""

from __future__ import annotations

import pytest

from hostmesh.dns.detect import DetectionFailed, detect_public_ip, parse_detector_body


@pytest.mark.parametrize(("body", "version", "ip"), [
    ("fl=1\nh=cloudflare.com\nip=203.0.113.7\nts=1\n", 4, "203.0.113.7"),
    ("203.0.113.8\n", 4, "203.0.113.8"),
    ("ip=2001:DB8::1\n", 6, "2001:db8::1"),
    ("  198.51.100.1  ", None, "198.51.100.1"),
])
def test_parse_good_bodies(body, version, ip):
    assert parse_detector_body(body, version) == ip


@pytest.mark.parametrize(("body", "version", "match"), [
    ("<html>oops</html>", 4, "holds no IP address"),
    ("fl=1\nh=x\n", 4, "holds no IP address"),
    ("ip=not-an-ip\n", 4, "holds no IP address"),
    ("ip=2001:db8::1\n", 4, "not an IPv4 address"),
    ("", 4, "holds no IP address"),
])
def test_parse_bad_bodies(body, version, match):
    with pytest.raises(DetectionFailed, match=match):
        parse_detector_body(body, version)


def test_detects_the_client_address_from_the_local_trace(cf):
    assert detect_public_ip(cf.trace_url, timeout=5) == "127.0.0.1"
    cf.control("trace", {"ip": "192.0.2.44"})
    assert detect_public_ip(cf.trace_url, timeout=5) == "192.0.2.44"


def test_detector_errors(cf):
    cf.control("trace", {"down": True})
    with pytest.raises(DetectionFailed, match="answered HTTP 503"):
        detect_public_ip(cf.trace_url, timeout=5)
    with pytest.raises(DetectionFailed, match="unreachable"):
        detect_public_ip("http://127.0.0.1:9/", timeout=5)
    with pytest.raises(DetectionFailed, match="must start with http"):
        detect_public_ip("ftp://127.0.0.1/", timeout=5)


def test_detector_cut_off_mid_answer_fails_cleanly():
    """Headers, then the detector goes away: a detection failure, never a traceback."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def answer_half():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")

    thread = threading.Thread(target=answer_half, daemon=True)
    thread.start()
    try:
        with pytest.raises(DetectionFailed, match="holds no IP address"):
            detect_public_ip(f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout=5)
    finally:
        thread.join(5)
        listener.close()
