"""WebAssembly plugins through the running gateway, driven by the `openai`
SDK: the example plugin (data-plane/plugins/examples/redact.wat) refusing
and rewriting requests, a response hook, plugins that spin, hog memory,
trap or answer nonsense (failing the request cleanly, or skipped when they
fail open, the data plane serving on), a plugin swapped without a restart,
modules the control plane refuses, and streamed answers through response
hooks: held and checked whole, or event by event, as the plugin declares."""

import base64
import subprocess

import anthropic
import httpx
import openai
import pytest

from conftest import BIN_DIR, ROOT, Gateway, wait_until

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


def stream_text(gw, model, text):
    stream = gw.openai(gw.key).chat.completions.create(
        model=model, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": text}])
    chunks = list(stream)
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content], chunks[-1].usage


# The example's masking as a response hook only: the provider sees the word, the client never does.
ANSWERS_ONLY = EXAMPLE.replace('(export "sb_on_request")', "")


def test_a_streamed_answer_is_held_and_checked_whole_by_a_response_hook(gw):
    route(gw, "held", {"name": "mask-answers", "wasm_base64": module(ANSWERS_ONLY)})
    pieces, usage = stream_text(gw, "held", "my password is hunter2")
    assert sent_upstream(gw) == "my password is hunter2"
    assert "".join(pieces) == "Echo: my ******** is hunter2"
    assert usage.completion_tokens == 5, "the usage chunk the client asked for survives the rewrite"
    # Anthropic's events, assembled into the message the hook sees, and told again.
    client = anthropic.Anthropic(base_url=gw.dp_url, api_key=gw.key, max_retries=0)
    with client.messages.stream(model="held", max_tokens=50,
                                messages=[{"role": "user", "content": "the password"}]) as stream:
        assert "".join(stream.text_stream) == "Echo: the ********"
        assert stream.get_final_message().stop_reason == "end_turn"
    # A stream served from the cache is checked again: the cache keeps the provider's answer.
    gw.admin("PATCH", "/routes/held", {"cache": {"ttl_seconds": 60}}, expect=200)
    gw.wait_synced()
    for expected in ("miss", "hit"):
        raw = gw.openai(gw.key).chat.completions.with_raw_response.create(
            model="held", stream=True, temperature=0, messages=[{"role": "user", "content": "cached password"}])
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        assert (raw.headers["x-switchboard-cache"], text) == (expected, "Echo: cached ********")
    # Refused whole: not a word of the answer reaches the client before the refusal.
    route(gw, "held-refused", {"name": "withhold", "wasm_base64": module(hook(verdict(16, 27), "sb_on_response"))})
    received = []
    with pytest.raises(openai.APIError) as refused:
        for chunk in gw.openai(gw.key).chat.completions.create(
                model="held-refused", stream=True, messages=[{"role": "user", "content": "hello"}]):
            received.extend(c.delta.content for c in chunk.choices if c.delta.content)
    assert refused.value.message == "answers withheld by policy" and received == []


def test_a_plugin_that_sees_chunks_checks_a_stream_event_by_event(gw):
    per_event = ANSWERS_ONLY.replace('"sb_on_response"', '"sb_on_chunk"')
    route(gw, "per-event", {"name": "mask-events", "wasm_base64": module(per_event)})
    pieces, usage = stream_text(gw, "per-event", "my password is hunter2")
    assert pieces == ["Echo:", " my", " ********", " is", " hunter2"], "passed on event by event"
    assert usage.completion_tokens == 5
    # The answer to a whole request still goes through the plugin's response hook: it has none.
    assert ask(gw, "per-event", "password").choices[0].message.content == "Echo: password"

    # Refused at an event: the stream ends with the plugin's message, recorded as refused.
    route(gw, "cut", {"name": "cut", "wasm_base64": module(hook(verdict(16, 27), "sb_on_chunk"))})
    with pytest.raises(openai.APIError) as refused:
        list(gw.openai(gw.key).chat.completions.create(
            model="cut", stream=True, messages=[{"role": "user", "content": "hello"}]))
    assert refused.value.message == "answers withheld by policy"
    record = wait_until(lambda: gw.usage_records(model="cut"), what="the cut stream recorded")[0]
    assert record["status"] == 400 and record["streamed"]
    metrics = httpx.get(gw.dp_url + "/metrics").text
    assert 'switchboard_plugin_calls_total{plugin="cut",hook="chunk",result="reject"}' in metrics


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
