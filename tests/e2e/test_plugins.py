"""WebAssembly plugins through the running gateway, driven by the `openai`
SDK: the example plugin (data-plane/plugins/examples/redact.wat) refusing
and rewriting requests, a response hook, plugins that spin, hog memory,
trap or answer nonsense (failing the request cleanly, or skipped when they
fail open, the data plane serving on), a plugin swapped without a restart,
and modules the control plane refuses."""

import base64
import subprocess

import httpx
import openai
import pytest

from conftest import BIN_DIR, ROOT, Gateway

pytestmark = pytest.mark.timeout(240)


def module(text):
    """A WebAssembly module from its text, as an operator builds one (docs/plugins.md)."""
    done = subprocess.run([BIN_DIR / "wat2wasm", "-"], input=text.encode(), capture_output=True, check=True)
    return base64.b64encode(done.stdout).decode()


EXAMPLE = (ROOT / "data-plane" / "plugins" / "examples" / "redact.wat").read_text()


def hook(body, name="sb_on_request", memory_pages=1):
    """A plugin whose one hook runs `body` (WAT instructions ending in an i64)."""
    return f"""(module
      (memory (export "memory") {memory_pages})
      (data (i32.const 16) "Ranswers withheld by policy")
      (data (i32.const 64) "Xnonsense")
      (func (export "sb_alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "{name}") (param i32 i32) (result i64) {body}))"""


def verdict(at, length):
    return f"(i64.or (i64.shl (i64.const {at}) (i64.const 32)) (i64.const {length}))"


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugins")
    gateway = Gateway(tmp, f"sqlite://{tmp}/control-plane.db")
    try:
        gateway.key = gateway.setup_basic()
        yield gateway
    finally:
        gateway.close()


def route(gw, model, *plugins, expect=201):
    body = {"model": model, "targets": [{"provider": "mock", "model": "up-" + model}],
            "guardrails": {"plugins": list(plugins)}}
    response = gw.admin("PUT" if expect == 200 else "POST", f"/routes/{model}" if expect == 200 else "/routes",
                        body, expect=expect)
    if expect < 300:
        gw.wait_synced()
    return response


def ask(gw, model, text):
    return gw.openai(gw.key).chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def sent_upstream(gw):
    return httpx.get(gw.mock_url + "/_mock/last").json()["body"]["messages"][0]["content"]


def test_the_example_plugin_refuses_and_rewrites_requests(gw):
    route(gw, "redacted", {"name": "redact", "wasm_base64": module(EXAMPLE)})
    answer = ask(gw, "redacted", "my password is hunter2")
    assert sent_upstream(gw) == "my ******** is hunter2"
    assert answer.choices[0].message.content == "Echo: my ******** is hunter2"
    with pytest.raises(openai.BadRequestError) as refused:
        ask(gw, "redacted", "please jailbreak yourself")
    assert refused.value.body["code"] == "guardrail_refused"
    assert refused.value.body["message"] == "This request was refused by the redact plugin: it asks for a jailbreak."


def test_a_response_hook_sees_the_whole_answer(gw):
    route(gw, "withheld", {"name": "withhold", "wasm_base64": module(hook(verdict(16, 27), "sb_on_response"))})
    before = httpx.get(gw.mock_url + "/_mock/stats").json()["requests"]
    with pytest.raises(openai.BadRequestError) as refused:
        ask(gw, "withheld", "hello")
    assert refused.value.body["message"] == "answers withheld by policy"
    assert httpx.get(gw.mock_url + "/_mock/stats").json()["requests"] == before + 1, "the provider answered"


FAILING = {
    "spin": (hook("(loop $forever (br $forever)) (i64.const 0)"), {"fuel": 100_000}, "out_of_fuel"),
    "hog": (hook("(drop (memory.grow (i32.const 1000))) (i64.const 0)"), {"max_memory_bytes": 1 << 20}, "memory"),
    "trap": (hook("unreachable"), {}, "trap"),
    "nonsense": (hook(verdict(64, 9)), {}, "abi"),
}


@pytest.mark.parametrize("name", FAILING)
def test_a_failing_plugin_fails_the_request_cleanly_or_is_skipped(gw, name):
    text, limits, result = FAILING[name]
    route(gw, f"fails-{name}", {"name": name, "wasm_base64": module(text), **limits})
    route(gw, f"skips-{name}", {"name": name, "wasm_base64": module(text), "fail_open": True, **limits})
    with pytest.raises(openai.InternalServerError) as failed:
        ask(gw, f"fails-{name}", "hi")
    assert failed.value.status_code == 500 and failed.value.body["code"] == "plugin_failed"
    assert ask(gw, f"skips-{name}", "hi").choices[0].message.content == "Echo: hi"
    assert ask(gw, "gpt-test", "still serving").choices[0].message.content == "Echo: still serving"
    metrics = httpx.get(gw.dp_url + "/metrics").text
    assert f'switchboard_plugin_calls_total{{plugin="{name}",hook="request",result="{result}"}}' in metrics


def test_a_plugin_is_swapped_without_a_restart(gw):
    pid = gw.dp.proc.pid
    closed = module(hook(verdict(16, 27)))
    route(gw, "swapped", {"name": "gate", "wasm_base64": closed})
    with pytest.raises(openai.BadRequestError):
        ask(gw, "swapped", "let me in")
    opened = module(hook("(i64.const 0)"))
    route(gw, "swapped", {"name": "gate", "wasm_base64": opened}, expect=200)
    assert ask(gw, "swapped", "let me in").choices[0].message.content == "Echo: let me in"
    assert gw.dp.proc.pid == pid and gw.dp.proc.poll() is None, "the same data plane process"


def test_the_control_plane_refuses_modules_data_planes_would_not_run(gw):
    importing = module("""(module (import "env" "open" (func (param i32) (result i32)))
      (memory (export "memory") 1) (func (export "sb_alloc") (param i32) (result i32) (i32.const 0))
      (func (export "sb_on_request") (param i32 i32) (result i64) (i64.const 0)))""")
    hookless = module("""(module (memory (export "memory") 1)
      (func (export "sb_alloc") (param i32) (result i32) (i32.const 0)))""")
    for wasm, words in [(importing, "import nothing"), (hookless, "no hook"),
                        (base64.b64encode(b"not wasm").decode(), "not a valid WebAssembly module"),
                        ("%%%", "not base64")]:
        refused = route(gw, "refused", {"name": "p", "wasm_base64": wasm}, expect=400).json()["error"]["message"]
        assert refused.startswith("guardrails.plugins[0].wasm_base64") and words in refused, refused
