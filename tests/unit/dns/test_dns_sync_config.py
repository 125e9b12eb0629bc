"""`hostmesh ddns sync` configuration: env file, flags over file, clear errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from hostmesh.cli import build_parser
from hostmesh.dns.sync import ConfigError, read_env_file, resolve

ROOT = Path(__file__).resolve().parents[3]


def parse(*argv):
    return build_parser().parse_args(["ddns", "sync", *argv])


def write_conf(tmp_path, text):
    conf = tmp_path / "ddns.env"
    conf.write_text(text)
    token = tmp_path / "token"
    token.write_text("tok-123\n")
    return conf, token


def test_env_file_parsing(tmp_path):
    conf, _ = write_conf(tmp_path, "# c\n\nA=1\nB='two words'\nC=\"x=y\"\nnot a pair\n")
    assert read_env_file(str(conf)) == {"A": "1", "B": "two words", "C": "x=y"}


def test_flags_override_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN", raising=False)
    conf, token = write_conf(tmp_path, "")
    conf.write_text(f"DDNS_ZONE=example.org\nDDNS_NAMES=example.org, *.example.org\n"
                    f"DDNS_CLUSTER=lab\nNODE_NAME=n1\nDDNS_TTL=120\nDDNS_PROXIED=true\n"
                    f"DDNS_TOKEN_FILE={token}\n")
    cfg = resolve(parse("--config", str(conf), "--node", "n9", "--ttl", "60"))
    assert (cfg.zone, cfg.names, cfg.cluster, cfg.node) == (
        "example.org", ["example.org", "*.example.org"], "lab", "n9")
    assert (cfg.ttl, cfg.proxied, cfg.token, cfg.retries) == (60, True, "tok-123", 3)
    assert cfg.detector_url == "https://cloudflare.com/cdn-cgi/trace"


@pytest.mark.parametrize(("text", "match"), [
    ("DDNS_ZONE=example.org\n", "missing settings: --name/DDNS_NAMES"),
    ("DDNS_ZONE=a.b\nDDNS_NAMES=a.b\nDDNS_CLUSTER=c\nNODE_NAME=n\nDDNS_TTL=soon\n", "not a valid int"),
    ("DDNS_ZONE=a.b\nDDNS_NAMES=a.b\nDDNS_CLUSTER=c\nNODE_NAME=n\n", "no API token"),
    ("DDNS_ZONE=a.b\nDDNS_NAMES=a.b\nDDNS_CLUSTER=c\nNODE_NAME=n\nDDNS_TOKEN_FILE=/nonexistent/t\n",
     "cannot read token file"),
])
def test_config_errors(tmp_path, monkeypatch, text, match):
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN", raising=False)
    conf, _ = write_conf(tmp_path, text)
    with pytest.raises(ConfigError, match=match):
        resolve(parse("--config", str(conf)))


def test_unreadable_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        resolve(argparse.Namespace(**vars(parse("--config", str(tmp_path / "missing.env")))))


def test_role_defaults_match_argument_specs():
    role = ROOT / "roles" / "ddns"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options)
    for name, spec in options.items():
        assert str(spec.get("default")) == str(defaults[name]), name
