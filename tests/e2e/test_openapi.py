"""The admin REST API's contract: an OpenAPI 3.1 document generated from the
code, its reference page (no network needed), and schemathesis against a live
control plane: no 500s, every answer as documented."""

import subprocess
import sys

import httpx
import pytest

pytestmark = pytest.mark.timeout(300)


def test_document_and_reference_page(gateway):
    root = gateway.admin_url.removesuffix("/api/v1")
    doc = httpx.get(f"{gateway.admin_url}/openapi.json").json()
    assert doc["openapi"].startswith("3.1") and doc["info"]["title"] == "Switchboard admin API"
    assert doc["components"]["securitySchemes"]["admin_token"] == {"type": "http", "scheme": "bearer"}
    key = doc["components"]["schemas"]["ApiKey"]
    assert {"id", "prefix", "limits", "budget"} <= set(key["properties"]) and "key" not in key["properties"]
    created = doc["components"]["schemas"]["CreatedKey"]
    assert "key" in str(created), "the one answer with a key's secret documents it"
    rotate = doc["paths"]["/api/v1/keys/{id}/rotate"]["post"]
    assert {"200", "400", "401", "403", "404", "409", "500"} <= set(rotate["responses"])
    assert rotate["security"] == [{"admin_token": []}]

    page = httpx.get(f"{root}/api/docs/")
    assert page.status_code == 200 and "swagger" in page.text.lower()
    # Every asset the page loads is served by the control plane itself.
    for asset in ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-initializer.js"):
        assert httpx.get(f"{root}/api/docs/{asset}").status_code == 200, asset
    assert "https://" not in page.text
    assert "/api/v1/openapi.json" in httpx.get(f"{root}/api/docs/swagger-initializer.js").text


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(gateway, tmp_path):
    gateway.setup_basic()
    team = gateway.admin("POST", "/teams", {"name": "fuzzed"}, expect=201).json()
    gateway.admin("POST", "/users", {"name": "someone", "team_id": team["id"]}, expect=201)
    report = tmp_path / "schemathesis.xml"
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{gateway.admin_url}/openapi.json",
         "--header", f"Authorization: Bearer {gateway.admin_token}",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
         "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "15", "--seed", "7",
         "--request-timeout", "10", "--report", "junit", "--report-junit-path", str(report), "--no-color"],
        capture_output=True, text=True, timeout=280, cwd=tmp_path)  # its cache of crashes stays out of the tree
    summary = done.stdout[-4000:]
    assert done.returncode == 0, summary
    # Every documented operation was exercised.
    operations = sum(len(item) for item in httpx.get(f"{gateway.admin_url}/openapi.json").json()["paths"].values())
    assert f"Tested: {operations}" in summary, summary
    assert 'failures="0"' in report.read_text() and 'errors="0"' in report.read_text()
    # The database still holds what was there: fuzzing through the contract cannot corrupt it.
    assert gateway.admin("GET", f"/teams/{team['id']}", expect=200).json()["name"] == "fuzzed"
