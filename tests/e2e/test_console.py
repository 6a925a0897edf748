"""The web console at /ui in headless Chromium (Debian's package, driven by
Playwright): an admin signs in, creates a team and a key; the key is used
through the `openai` SDK; the request shows in the live overview and on the
cost page; a viewer cannot create a key. A screenshot of every page is kept in
tests/e2e/artifacts/console/."""

import re
import shutil

import httpx
import pytest

from conftest import ROOT, Gateway, secret, wait_until

pytestmark = pytest.mark.timeout(240)

ARTIFACTS = ROOT / "tests" / "e2e" / "artifacts" / "console"
PAGES = ["overview", "cost", "keys", "users", "teams", "providers", "routes", "prices", "jwt-issuers", "admins",
         "audit"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium package is needed (make test-deps installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture
def gw(tmp_path):
    gateway = Gateway(tmp_path, f"sqlite://{tmp_path}/control-plane.db")
    yield gateway
    gateway.close()


def open_console(browser, gateway, token):
    # A laptop screen.
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # No request may leave loopback: the console works without internet.
    page.route(re.compile(r"^https?://(?!127\.0\.0\.1)"), lambda route: (errors.append(route.request.url), route.abort()))
    page.goto(gateway.admin_url.removesuffix("/api/v1") + "/ui")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Overview", level=1).wait_for()
    return page, errors


def test_admin_creates_a_team_and_a_key_and_sees_the_request(browser, gw):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    gw.admin("POST", "/providers", {"name": "mock", "kind": "openai_compatible", "base_url": gw.mock_url + "/v1",
                                    "api_key": "sk-mock-upstream"}, expect=201)
    gw.admin("POST", "/routes", {"model": "gpt-test", "targets": [{"provider": "mock", "model": "gpt-4o-mini"}]},
             expect=201)
    page, errors = open_console(browser, gw, gw.admin_token)
    assert "admin" in page.locator("#who").inner_text()

    # A team, with a budget, from the Teams page.
    page.get_by_role("link", name="Teams").click()
    form = page.get_by_role("form", name="Create a team")
    form.get_by_label("Name").fill("console-team")
    form.get_by_label("Models").fill("gpt-test")
    form.get_by_label("Budget (USD)").fill("20.00")
    form.get_by_role("button", name="Create team").click()
    page.get_by_role("cell", name="console-team").wait_for()

    # A key in that team: its secret is shown once, in a dialog.
    page.get_by_role("link", name="Keys").click()
    form = page.get_by_role("form", name="Create a key")
    form.get_by_label("Name", exact=True).fill("console-key")
    form.get_by_label("Team", exact=True).select_option(label="console-team")
    form.get_by_label("Requests per minute").fill("600")
    form.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    key = secret(dialog.locator("#secret-value").inner_text().strip())
    assert key.startswith("sk-")
    page.screenshot(path=str(ARTIFACTS / "key-created.png"))
    dialog.get_by_role("button", name="I have stored it").click()
    row = page.get_by_role("row").filter(has_text="console-key")
    row.wait_for()
    assert "console-team" in row.inner_text() and key not in page.content()

    # The key works through the official SDK.
    gw.wait_synced()
    answer = gw.openai(key).chat.completions.create(model="gpt-test",
                                                    messages=[{"role": "user", "content": "hello console"}])
    assert answer.choices[0].message.content
    stream = gw.openai(key).chat.completions.create(model="gpt-test", stream=True,
                                                    messages=[{"role": "user", "content": "stream to the console"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    wait_until(lambda: gw.usage()["requests"] == 2, what="usage shipped")
    streamed = [r for r in gw.usage_records() if r["streamed"]]
    assert len(streamed) == 1 and 0 <= streamed[0]["ttft_ms"] <= streamed[0]["latency_ms"]
    assert gw.usage()["ttft_ms_p50"] == streamed[0]["ttft_ms"]

    # The overview shows it without a reload (it refreshes itself).
    page.get_by_role("link", name="Overview").click()
    health = page.get_by_role("table", name="Provider health over the last 5 minutes")
    wait_until(lambda: "mock" in health.inner_text(), timeout=15, what="overview updated")
    assert "healthy" in health.inner_text()
    figures = page.locator(".figures").inner_text()
    assert "Requests today\n2" in figures, figures
    assert f"Time to first token P50 / P99\n{streamed[0]['ttft_ms']} / {streamed[0]['ttft_ms']} ms" in figures
    planes = page.get_by_role("table", name=re.compile("Config version"))
    assert "yes" in planes.inner_text()  # the data plane is connected

    # The cost page: by model, the team as top spender, its budget.
    page.get_by_role("link", name="Cost").click()
    page.get_by_label("Group by").select_option("model")
    page.get_by_role("button", name="Show").click()
    usage = page.get_by_role("table", name="Usage by model")
    wait_until(lambda: "gpt-test" in usage.inner_text(), what="cost by model")
    assert re.search(r"gpt-test\s+2\s", usage.inner_text()), usage.inner_text()
    assert "console-team" in page.get_by_role("table", name="Top teams by cost").inner_text()
    assert page.get_by_role("heading", name="team console-team").is_visible()
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    csv_text = open(download.value.path()).read()
    assert csv_text.startswith("model,requests,") and "gpt-test,2," in csv_text

    # Every page renders; each is kept as a picture.
    for name in PAGES:
        page.goto(page.url.split("#")[0] + f"#/{name}")
        page.locator(f'main[data-ready="{name}"]').wait_for()
        assert not page.locator("main .error").count(), f"{name}: {page.locator('main .error').all_inner_texts()}"
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    audit = page.get_by_role("table", name="Admin writes, newest first").inner_text()
    assert "key.create" in audit and "team.create" in audit

    # A target whose circuit breaker opens on a data plane shows on the overview.
    gw.start_data_plane(extra=("--breaker-failures", "2", "--breaker-cooldown-ms", "60000",
                               "--breaker-min-requests", "1000"))
    gw.admin("POST", "/routes", {"model": "flaky", "targets": [{"provider": "mock", "model": "t-flaky"}],
                                 "retry": {"max_attempts": 1}}, expect=201)
    other = gw.admin("POST", "/keys", {"name": "any-model"}, expect=201).json()["key"]
    gw.wait_synced()
    outage = {"model": "t-flaky", "failure": "500"}
    httpx.put(gw.mock_url + "/_mock/outage", json=outage)
    for _ in range(3):
        httpx.post(f"{gw.dp_url}/v1/chat/completions", headers={"authorization": f"Bearer {other}"},
                   json={"model": "flaky", "messages": [{"role": "user", "content": "x"}]}, timeout=10)
    planes_now = lambda: gw.admin("GET", "/dataplanes", expect=200).json()["data_planes"]
    wait_until(lambda: any(p["open_breakers"] for p in planes_now() if p["connected"]), timeout=10,
               what="the open breaker reported")
    assert [p["open_breakers"] for p in planes_now() if p["connected"]] == [[{"provider": "mock", "model": "t-flaky"}]]
    page.goto(page.url.split("#")[0] + "#/overview")
    health = page.get_by_role("table", name="Provider health over the last 5 minutes")
    wait_until(lambda: "t-flaky (on 1 data plane)" in health.inner_text(), timeout=15, what="breaker on the overview")
    assert "mock/t-flaky" in page.get_by_role("table", name=re.compile("Config version")).inner_text()
    page.screenshot(path=str(ARTIFACTS / "overview-breaker-open.png"), full_page=True)
    assert not errors, errors


def test_a_viewer_sees_but_cannot_create_a_key(browser, gw):
    token = gw.admin("POST", "/admins", {"name": "watcher", "role": "viewer"}, expect=201).json()["token"]
    page, errors = open_console(browser, gw, token)
    assert "viewer" in page.locator("#who").inner_text()
    page.get_by_role("link", name="Keys").click()
    page.get_by_role("table", name="API keys").wait_for()
    assert page.get_by_role("form", name="Create a key").count() == 0
    assert "may read keys but not change them" in page.locator("main").inner_text()
    assert page.get_by_role("button", name="Revoke").count() == 0
    page.screenshot(path=str(ARTIFACTS / "viewer-keys.png"))
    # Even by hand, through the page's own session, the API refuses.
    status = page.evaluate("""async (token) => (await fetch('/api/v1/keys', {method: 'POST',
        headers: {authorization: 'Bearer ' + token, 'content-type': 'application/json'},
        body: JSON.stringify({name: 'sneaky'})})).status""", token)
    assert status == 403
    assert not [k for k in gw.admin("GET", "/keys", expect=200).json() if k["name"] == "sneaky"]
    # A token that stops working sends the console back to sign-in.
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Admin token").fill("sbadm_wrong")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("That token is not accepted.").wait_for()
    assert not errors, errors


def test_admins_sign_in_with_the_identity_provider(browser, gw):
    """OIDC, authorization code + PKCE against a provider the test runs: the
    role claim decides what the console may do; no role, no sign-in."""
    from oidc_provider import Provider

    idp = Provider(client_id="switchboard-console")
    try:
        root = gw.admin_url.removesuffix("/api/v1")
        gw.cp.stop()
        gw.cp = gw.start_control_plane(extra=(
            "--oidc-issuer", idp.url, "--oidc-client-id", "switchboard-console",
            "--oidc-redirect-url", f"{root}/ui/oidc/callback"))
        team = gw.admin("POST", "/teams", {"name": "sso-team"}, expect=201).json()

        def sign_in(claims):
            idp.user = claims
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(root + "/ui/")
            page.get_by_role("link", name="Sign in with your identity provider").click()
            return page

        # A viewer: signed in, sees keys, may not create one.
        page = sign_in({"sub": "vera", "switchboard_role": "viewer"})
        page.get_by_role("heading", name="Overview", level=1).wait_for()
        assert page.locator("#who").inner_text() == "oidc/vera · viewer"
        assert "session=" not in page.url, "the session token does not stay in the address bar"
        page.get_by_role("link", name="Keys").click()
        page.get_by_role("table", name="API keys").wait_for()
        assert page.get_by_role("form", name="Create a key").count() == 0
        page.screenshot(path=str(ARTIFACTS / "sso-viewer.png"))
        # The provider saw PKCE, and the browser never got the provider's tokens.
        assert idp.exchanges[-1]["code_verifier"] and "at-" not in page.content()

        # A team admin of the team its claim names (by name): creates a key there.
        page = sign_in({"sub": "tom", "switchboard_role": ["viewer", "team_admin"], "switchboard_team": "sso-team"})
        page.get_by_role("heading", name="Overview", level=1).wait_for()
        assert page.locator("#who").inner_text() == "oidc/tom · team admin"
        page.get_by_role("link", name="Keys").click()
        form = page.get_by_role("form", name="Create a key")
        form.get_by_label("Name", exact=True).fill("sso-key")
        form.get_by_role("button", name="Create key").click()
        page.get_by_role("dialog").wait_for()
        assert secret(page.locator("#secret-value").inner_text().strip()).startswith("sk-sb-")
        page.get_by_role("button", name="I have stored it").click()
        key = next(k for k in gw.admin("GET", "/keys", expect=200).json() if k["name"] == "sso-key")
        assert key["team_id"] == team["id"]
        audit = gw.admin("GET", "/audit", params={"resource": f"key/{key['id']}"}, expect=200).json()["rows"]
        assert audit[0]["actor"] == "oidc/tom"
        sessions = gw.admin("GET", "/audit", params={"actor": "oidc/tom"}, expect=200).json()["rows"]
        assert "session.create" in {row["action"] for row in sessions}

        # No role claim: no session, and the sign-in page says why.
        page = sign_in({"sub": "mallory"})
        page.get_by_text("no console role").wait_for()
        assert page.get_by_label("Admin token").is_visible()
    finally:
        idp.close()
