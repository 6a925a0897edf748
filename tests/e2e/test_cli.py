"""The `switchboard` CLI, run as a binary against a live control plane: login,
configuration as code (apply, diff, --prune, export then apply is a no-op),
errors naming the file, the resource and the field, keys, and the reports."""

import csv
import io
import json
import os
import stat
import subprocess

import pytest

from conftest import BIN_DIR, MOCK_KEY, Gateway, secret, wait_until

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def sb(tmp_path):
    gw = Gateway(tmp_path, f"sqlite://{tmp_path}/control-plane.db")
    yield gw
    gw.close()


class Cli:
    def __init__(self, gateway, tmp_path):
        self.config = tmp_path / "cli" / "config.yaml"
        self.url = gateway.admin_url.removesuffix("/api/v1")
        self.env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SWITCHBOARD_CONFIG": str(self.config)}

    def run(self, *args, env=None, ok=True, stdin=None):
        done = subprocess.run([BIN_DIR / "switchboard", *args], capture_output=True, text=True, timeout=60,
                              env={**self.env, **(env or {})}, input=stdin)
        if ok:
            assert done.returncode == 0, f"switchboard {' '.join(args)}: {done.stderr}"
        else:
            assert done.returncode != 0, f"switchboard {' '.join(args)} should have failed: {done.stdout}"
        return done


GATEWAY_FILE = """
providers:
  - name: upstream
    kind: openai_compatible
    base_url: {mock}/v1/
    api_key_env: UPSTREAM_KEY
routes:
  # Declared before the route it falls back to: apply orders them.
  - model: smart
    targets: [{{provider: upstream, model: gpt-4o}}]
    fallbacks: [cheap]
  - model: cheap
    targets: [{{provider: upstream, model: gpt-4o-mini, weight: 2}}]
    cache: {{ttl_seconds: 600, scope: key}}
prices:
  - model: gpt-4o
    input_per_million: "2.50"
    output_per_million: "10.00"
teams:
  - name: search
    models: [smart, cheap]
    limits: {{rpm: 100}}
    budget: {{amount: "50", period: monthly}}
    guardrails: {{pii: {{kinds: [email]}}, deny: {{words: [nightingale]}}}}
users:
  - name: Alice
    email: alice@example.com
    team: search
    limits: {{tpm: 100000}}
  - name: Bob
    email: bob@example.com
    team: search
"""


def test_login_apply_diff_prune_export(sb, tmp_path):
    cli = Cli(sb, tmp_path)
    # Without a session, every command says how to get one.
    assert "switchboard login" in cli.run("get", "routes", ok=False).stderr
    assert "refused" in cli.run("login", "--url", cli.url, "--token", "sbadm_wrong", ok=False).stderr
    cli.run("login", "--url", cli.url, "--token", sb.admin_token)
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    assert sb.admin_token in cli.config.read_text()

    path = tmp_path / "gateway.yaml"
    path.write_text(GATEWAY_FILE.format(mock=sb.mock_url))
    # A provider to create needs its credential from the environment.
    failure = cli.run("apply", "-f", str(path), ok=False).stderr
    assert "provider upstream: api_key_env: environment variable UPSTREAM_KEY is not set" in failure
    plan = cli.run("diff", "-f", str(path)).stdout
    # gpt-4o has a price already (the seeded table): the file's replaces it.
    assert plan.splitlines()[:4] == ["+ provider upstream", "    api_key: from $UPSTREAM_KEY", "~ price gpt-4o",
                                     '    cached_input_per_million: "1.25" -> "2.50"']
    assert plan.index("+ route cheap") < plan.index("+ route smart")
    applied = cli.run("apply", "-f", str(path), env={"UPSTREAM_KEY": MOCK_KEY}).stdout
    assert "Applied 7 change(s)." in applied

    # What the file declared is what the gateway does: the credential came from the environment.
    team = next(t for t in sb.admin("GET", "/teams", expect=200).json() if t["name"] == "search")
    assert team["limits"] == {"rpm": 100} and team["budget"]["amount"] == "50.00"
    key = sb.admin("POST", "/keys", {"name": "k", "team_id": team["id"], "models": ["smart"]}, expect=201).json()["key"]
    sb.wait_synced()
    answer = sb.openai(key).chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content
    # Idempotent.
    assert cli.run("apply", "-f", str(path)).stdout == "No changes.\n"

    # A change shows field by field; what the file drops stays unless pruned.
    changed = GATEWAY_FILE.format(mock=sb.mock_url).replace("{rpm: 100}", "{rpm: 200}")
    changed = changed.replace("  - model: cheap\n", "  - model: cheap\n    strategy: priority\n")
    changed = changed.split("  - name: Bob")[0]
    path.write_text(changed)
    diff = cli.run("diff", "-f", str(path)).stdout
    assert "~ route cheap\n    strategy: \"weighted\" -> \"priority\"\n" in diff
    assert '~ team search\n    limits: {"rpm":100} -> {"rpm":200}\n' in diff
    assert "- user" not in diff
    pruned = cli.run("diff", "-f", str(path), "--prune").stdout
    assert "- user email=bob@example.com" in pruned
    assert "! price gpt-4o-mini is not in the file" in pruned  # seeded prices are kept, and said so
    cli.run("apply", "-f", str(path), "--prune")
    users = sb.admin("GET", "/users", expect=200).json()
    assert [u["name"] for u in users] == ["Alice"]
    assert sb.admin("GET", "/routes/cheap", expect=200).json()["strategy"] == "priority"
    audit = sb.admin("GET", "/audit", params={"resource": f"team/{team['id']}"}, expect=200).json()["rows"]
    assert audit[0]["action"] == "team.update" and audit[0]["actor"] == "admin"

    # Export, then apply what was exported: nothing to do. To a file as well.
    exported = cli.run("export").stdout
    assert "api_key_env: SWITCHBOARD_UPSTREAM_API_KEY" in exported and MOCK_KEY not in exported
    (tmp_path / "exported.yaml").write_text(exported)
    assert cli.run("apply", "-f", str(tmp_path / "exported.yaml"), "--prune").stdout.startswith("No changes.")
    cli.run("export", "-f", str(tmp_path / "again.yaml"))
    assert (tmp_path / "again.yaml").read_text() == exported


@pytest.mark.parametrize("text,message", [
    ("routes:\n  - model: x\n    targets: [{provider: p, model: m, wieght: 2}]\n",
     "bad.yaml: routes[0].targets[0]: unknown field `wieght`"),
    ("teams:\n  - name: t\n    budget: {amount: twelve}\n", "bad.yaml: teams[0].budget: expected a decimal string"),
    ("providers:\n  - name: p\n    kind: openia\n    base_url: http://x\n", "bad.yaml: providers[0].kind: unknown variant `openia`"),
    ("users:\n  - name: u\n    team: nowhere\n", "bad.yaml: users[0].team: team \"nowhere\" is not declared in the file"),
    ("teams:\n  - name: t\n  - name: t\n", "bad.yaml: teams[1]: \"t\" is declared twice"),
    ("routes:\n  - model: x\n    targets: [{provider: ghost, model: m}]\n",
     "route x (after 0 of 1 changes were applied): targets[0].provider: provider \"ghost\" does not exist"),
])
def test_errors_name_the_file_the_resource_and_the_field(sb, tmp_path, text, message):
    cli = Cli(sb, tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    os.chdir(tmp_path)
    env = {"SWITCHBOARD_URL": cli.url, "SWITCHBOARD_TOKEN": sb.admin_token}
    assert message in cli.run("apply", "-f", "bad.yaml", env=env, ok=False).stderr


def test_keys_resources_and_reports(sb, tmp_path):
    cli = Cli(sb, tmp_path)
    sb.setup_basic()
    env = {"SWITCHBOARD_URL": cli.url, "SWITCHBOARD_TOKEN": sb.admin_token}
    team = json.loads(cli.run("create", "teams", "-f", "-", "-o", "json", env=env,
                              stdin='{"name": "analytics", "models": ["gpt-test"]}').stdout)
    assert team["name"] == "analytics"

    created = cli.run("keys", "create", "--name", "ci", "--team", "analytics", "--models", "gpt-test",
                      "--rpm", "60", "-o", "json", env=env)
    assert "shown only now" in created.stderr
    key = json.loads(created.stdout)
    secret(key["key"])
    assert key["team_id"] == team["id"] and key["limits"] == {"rpm": 60}
    sb.wait_synced()
    client = sb.openai(key["key"])
    for _ in range(3):
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "count me"}])

    rotated = json.loads(cli.run("keys", "rotate", key["id"], "--grace-seconds", "0", "-o", "json", env=env).stdout)
    secret(rotated["key"])
    assert rotated["key"] != key["key"] and rotated["id"] == key["id"]
    table = cli.run("get", "keys", env=env).stdout
    assert "ci" in table and key["key"] not in table and rotated["key"] not in table
    assert "revoked: false" in cli.run("describe", "key", key["id"], env=env).stdout
    assert json.loads(cli.run("keys", "revoke", key["id"], "-o", "json", env=env).stdout)["revoked"] is True
    assert "revoked: true" in cli.run("get", "keys", key["id"], "-o", "yaml", env=env).stdout
    # Teams by name as well as id; delete.
    assert json.loads(cli.run("get", "team", "analytics", "-o", "json", env=env).stdout)["id"] == team["id"]
    assert "not found" in cli.run("get", "team", "nobody", env=env, ok=False).stderr

    # Usage by model and day, as CSV; the team filter takes a name.
    wait_until(lambda: sb.usage(team_id=team["id"])["requests"] == 3, what="usage shipped")
    report = cli.run("usage", "--by", "model,day", "--since", "1d", "--team", "analytics", "--csv", env=env).stdout
    rows = list(csv.DictReader(io.StringIO(report)))
    assert [(r["model"], r["requests"]) for r in rows] == [("gpt-test", "3")]
    assert rows[0]["day"].endswith("T00:00:00.000Z") and rows[0]["currency"] == "USD"
    assert "gpt-test" in cli.run("usage", "--since", "2h", env=env).stdout

    planes = json.loads(cli.run("dataplanes", "-o", "json", env=env).stdout)
    assert len(planes) == 1 and planes[0]["connected"] and planes[0]["lag"] == 0
    assert "config version" in cli.run("dataplanes", env=env).stdout
    audit = json.loads(cli.run("audit", "--since", "1h", "-o", "json", env=env).stdout)
    assert {"key.create", "key.rotate", "key.revoke", "team.create"} <= {row["action"] for row in audit}
    assert cli.run("audit", "--since", "yesterday-ish", env=env, ok=False).stderr.startswith("error: --since")
    cli.run("delete", "team", "analytics", env=env, ok=False)  # its key still names it: refused, said why

    purged = json.loads(cli.run("cache", "purge", "--team", "analytics", "-o", "json", env=env).stdout)
    assert purged["teams"] == {team["id"]: 1}
    assert json.loads(cli.run("cache", "purge", "--all", "-o", "json", env=env).stdout)["everything"] == 1
    assert "required" in cli.run("cache", "purge", env=env, ok=False).stderr
    assert ("cache.purge", f"cache/teams/{team['id']}") in {
        (row["action"], row["resource"]) for row in sb.admin("GET", "/audit", expect=200).json()["rows"]}
