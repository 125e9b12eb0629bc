"""Property-based fuzzing of every endpoint from the agent's own /openapi.json.

Schemathesis generates valid and invalid requests for each operation; the
primary must never answer 5xx, must answer what its document says, and no
answer may contain a key or token (the invite token, created on purpose and
shown once, is the only secret an answer may carry).
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from agent_harness import ADMIN_TOKEN, REGISTRATION_TOKEN, Cluster, node_key, wait_for
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)


@pytest.fixture(scope="module")
def fuzz_cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("fuzz"))
    primary = cluster.primary(REGISTRATION_RATE_LIMIT="100000/60")
    secondary = cluster.secondary(primary, "fuzzed")
    wait_for(lambda: "auto-registration successful" in secondary.log(), 10, what="registered")
    yield cluster, primary, secondary
    cluster.close()


def _secrets(primary, secondary) -> list[str]:
    primary_key = (primary.data_dir / "node_api_key").read_text().strip()
    return [ADMIN_TOKEN, REGISTRATION_TOKEN, primary_key, secondary.env["NODE_API_KEY"],
            node_key("fuzzed")]


def _no_secret(secrets):
    @schemathesis.check
    def no_secret_in_response(ctx, response, case):
        text = response.text or ""
        for secret in secrets:
            if secret in text:
                raise AssertionError(f"{case.method} {case.path} answered with a secret")
        # no answer carries a key field (error messages may name fields, not values)
        for field in ('"api_key":', '"key_hash":', '"prev_key_hash":'):
            assert field not in text.replace(" ", ""), f"{case.path} answered {field}"
        if case.path != "/api/invites":
            assert '"token":' not in text.replace(" ", "")

    return no_secret_in_response


@pytest.fixture(scope="module")
def primary_schema(fuzz_cluster):
    _, primary, _ = fuzz_cluster
    return schemathesis.openapi.from_url(primary.url + "/openapi.json")


@pytest.fixture(scope="module")
def secondary_schema(fuzz_cluster):
    _, _, secondary = fuzz_cluster
    return schemathesis.openapi.from_url(secondary.url + "/openapi.json")


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


def _fuzz(schema, headers: dict, secrets: list[str], mode, examples: int = 150) -> None:
    checks = [*CHECKS, _no_secret(secrets)]

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    @given(case=schema.as_strategy(generation_mode=mode))
    def run(case):
        case.call_and_validate(headers=headers, checks=checks)

    run()


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_fuzz_primary_as_admin(primary_schema, fuzz_cluster, mode):
    _, primary, secondary = fuzz_cluster
    _fuzz(primary_schema, {"Authorization": f"Bearer {ADMIN_TOKEN}"},
          _secrets(primary, secondary), mode)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_fuzz_primary_as_node(primary_schema, fuzz_cluster, mode):
    _, primary, secondary = fuzz_cluster
    headers = {"X-Node-ID": secondary.node_id(), "X-Node-API-Key": node_key("fuzzed")}
    _fuzz(primary_schema, headers, _secrets(primary, secondary), mode)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_fuzz_secondary(secondary_schema, fuzz_cluster, mode):
    _, primary, secondary = fuzz_cluster
    primary_key = (primary.data_dir / "node_api_key").read_text().strip()
    _fuzz(secondary_schema, {"X-Node-API-Key": primary_key}, _secrets(primary, secondary), mode)


def test_openapi_document_has_no_secret(fuzz_cluster):
    _, primary, secondary = fuzz_cluster
    from hostmesh.module_utils._agent_client import AgentClient

    for agent in (primary, secondary):
        status, doc = AgentClient(agent.url).request("GET", "/openapi.json")
        text = json.dumps(doc)
        assert status == 200 and doc["openapi"].startswith("3.")
        for secret in _secrets(primary, secondary):
            assert secret not in text
    # the agents survived the fuzzing and the primary still knows its node
    names = {n["name"] for n in primary.admin().list_nodes()}
    assert "primary" in names
