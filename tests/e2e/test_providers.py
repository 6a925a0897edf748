"""Every provider kind through the running gateway, driven by the official
`openai` and `anthropic` SDKs, each against a mock that speaks the provider's
own wire format (tests/src/mocks): chat, streams, tools,
vision, embeddings, error mapping and usage accounting."""

import base64
import json
import uuid
from decimal import Decimal
from dataclasses import dataclass, field

import anthropic
import httpx
import openai
import pytest

from conftest import Gateway, Process, wait_until

IMAGE = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake pixels").decode()
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"], "additionalProperties": False}}}


@dataclass
class Kind:
    name: str
    kind: str
    path: str = ""
    settings: dict = field(default_factory=dict)
    mock_args: tuple = ()
    api_key: str = "sk-mock-upstream"
    secret_key: str = None
    embeddings: bool = True
    vision: bool = True
    max_tokens: bool = True

    @property
    def model(self):
        return "m-" + self.name


KINDS = [
    Kind("openai", "openai", "/v1"),
    Kind("azure", "azure_openai", settings={"api_version": "2024-10-21"}),
    Kind("anthropic", "anthropic", embeddings=False),
    Kind("gemini", "gemini", "/v1beta"),
    Kind("qianfan-v2", "qianfan", "/v2"),
    Kind("qianfan-v1", "qianfan", settings={"api": "native"}, mock_args=("--api", "native"),
         secret_key="mock-secret-key", vision=False),
    Kind("dashscope-compat", "dashscope", "/compatible-mode/v1"),
    Kind("dashscope", "dashscope", settings={"api": "native"}, mock_args=("--api", "native"), vision=False),
    Kind("hunyuan-openai", "hunyuan", "/v1"),
    Kind("hunyuan", "hunyuan", settings={"api": "native", "secret_id": "AKIDmock"}, mock_args=("--api", "native"),
         secret_key="mock-secret-key", max_tokens=False),
    Kind("ark", "ark", "/api/v3"),
    Kind("deepseek", "deepseek", embeddings=False),
    Kind("ollama-openai", "ollama", "/v1", mock_args=("--api-key", ""), api_key=None),
    Kind("ollama", "ollama", settings={"api": "native"}, mock_args=("--api", "native", "--api-key", ""), api_key=None),
    Kind("vllm", "vllm", "/v1"),
    Kind("compatible", "openai_compatible", "/v1"),
]
BY_NAME = {k.name: k for k in KINDS}


@pytest.fixture(scope="module")
def providers(tmp_path_factory):
    """One gateway with a mock and a route per provider configuration."""
    tmp = tmp_path_factory.mktemp("providers")
    gw = Gateway(tmp, f"sqlite://{tmp}/control-plane.db")
    gw.mock_urls = {}
    try:
        # Each provider's errors are checked one by one: no retries, and no
        # target set aside by the breaker (routing has its own tests).
        gw.dp = gw.start_data_plane(extra=("--retry-max-attempts", "1", "--breaker-failures", "1000",
                                           "--breaker-min-requests", "1000", "--breaker-max-retry-after-ms", "0"))
        for k in KINDS:
            mock = Process("mock-provider", ["--kind", k.kind, *k.mock_args], tmp).start()
            gw.processes.append(mock)
            gw.mock_urls[k.name] = "http://" + mock.proc.stdout.readline().decode().strip().rsplit(" ", 1)[-1]
            spec = {"name": k.name, "kind": k.kind, "base_url": gw.mock_urls[k.name] + k.path, "settings": k.settings}
            if k.api_key:
                spec["api_key"] = k.api_key
            if k.secret_key:
                spec["secret_key"] = k.secret_key
            gw.admin("POST", "/providers", spec, expect=201)
            gw.admin("POST", "/routes", {"model": k.model, "targets": [{"provider": k.name, "model": "up-" + k.name}]},
                     expect=201)
        gw.key = gw.admin("POST", "/keys", {"name": "providers"}, expect=201).json()["key"]
        gw.wait_synced()
        yield gw
    finally:
        gw.close()


def last_request(gw, name):
    return httpx.get(gw.mock_urls[name] + "/_mock/last").json()


def chat_kwargs(k, **kwargs):
    if k.max_tokens:
        kwargs.setdefault("max_tokens", 200)
    return kwargs


@pytest.mark.parametrize("k", KINDS, ids=lambda k: k.name)
def test_chat_and_stream_with_usage(providers, k):
    client = providers.openai(providers.key)
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello there gateway"}]
    answer = client.chat.completions.create(model=k.model, messages=messages, **chat_kwargs(k))
    assert answer.choices[0].message.content == "Echo: hello there gateway"
    assert answer.choices[0].finish_reason == "stop"
    # Words in (system prompt included) and out, as the mock counts them.
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (6, 4)

    stream = client.chat.completions.create(model=k.model, messages=messages, stream=True,
                                            stream_options={"include_usage": True}, **chat_kwargs(k))
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello there gateway"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 10

    # Without include_usage, no usage chunk reaches the client.
    plain = list(client.chat.completions.create(model=k.model, messages=messages, stream=True, **chat_kwargs(k)))
    assert all(c.usage is None for c in plain)


@pytest.mark.parametrize("k", KINDS, ids=lambda k: k.name)
def test_tool_calls_and_results(providers, k):
    client = providers.openai(providers.key)
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    answer = client.chat.completions.create(model=k.model, messages=ask, tools=[WEATHER_TOOL], **chat_kwargs(k))
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})

    streamed = list(client.chat.completions.create(model=k.model, messages=ask, tools=[WEATHER_TOOL], stream=True,
                                                   **chat_kwargs(k)))
    deltas = [tc for c in streamed if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas if d.index == 0)
    assert json.loads(arguments) == {"city": "Paris"}
    assert streamed[-1].choices[0].finish_reason == "tool_calls"

    follow_up = ask + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                       {"role": "tool", "tool_call_id": call.id, "content": "20C and sunny"}]
    answer = client.chat.completions.create(model=k.model, messages=follow_up, tools=[WEATHER_TOOL], **chat_kwargs(k))
    assert "20C" in answer.choices[0].message.content


@pytest.mark.parametrize("k", KINDS, ids=lambda k: k.name)
def test_vision(providers, k):
    client = providers.openai(providers.key)
    content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": IMAGE}}]
    if not k.vision:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=k.model, messages=[{"role": "user", "content": content}],
                                           **chat_kwargs(k))
        assert refused.value.body["param"].endswith("image_url")
        return
    answer = client.chat.completions.create(model=k.model, messages=[{"role": "user", "content": content}],
                                            **chat_kwargs(k))
    assert answer.choices[0].message.content == "I see 1 image(s)."


@pytest.mark.parametrize("k", KINDS, ids=lambda k: k.name)
def test_embeddings(providers, k):
    client = providers.openai(providers.key)
    if not k.embeddings:
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model=k.model, input="x")
        return
    # The SDK asks for base64 and decodes it: the gateway answers in kind.
    first = client.embeddings.create(model=k.model, input=["alpha beta", "gamma"])
    again = client.embeddings.create(model=k.model, input="alpha beta", encoding_format="float")
    assert [d.index for d in first.data] == [0, 1]
    assert len(first.data[0].embedding) == 8
    assert first.data[0].embedding == pytest.approx(again.data[0].embedding)
    assert first.data[0].embedding != first.data[1].embedding


@pytest.mark.parametrize("k", KINDS, ids=lambda k: k.name)
def test_errors_keep_their_meaning(providers, k):
    client = providers.openai(providers.key)

    def ask(text, **kwargs):
        return client.chat.completions.create(model=k.model, messages=[{"role": "user", "content": text}],
                                              **chat_kwargs(k, **kwargs))

    with pytest.raises(openai.RateLimitError) as limited:
        ask("FAIL 429")
    assert limited.value.body["code"] == "rate_limit_exceeded"
    if k.kind not in ("qianfan", "hunyuan", "ollama") or k.name in ("qianfan-v2", "hunyuan-openai", "ollama-openai"):
        # Providers that send a delay have it passed on.
        assert limited.value.response.headers.get("retry-after") == "7"
    if k.name == "hunyuan":
        # Tencent's native API truncates an over-long input instead of failing.
        assert ask("FAIL context").choices[0].message.content == "Echo: FAIL context"
    else:
        with pytest.raises(openai.BadRequestError) as too_long:
            ask("FAIL context")
        assert too_long.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.InternalServerError) as busy:
        ask("FAIL 529")
    assert busy.value.status_code in (502, 503)
    # The provider refusing the gateway's credential is not the client's 401.
    with pytest.raises(openai.APIStatusError) as refused:
        ask("FAIL 401")
    assert refused.value.status_code == 502 and refused.value.body["code"] == "upstream_auth_failed"

    # A stream whose error comes before any output is an HTTP error too.
    with pytest.raises(openai.RateLimitError):
        list(ask("FAIL 429", stream=True))
    # Cut mid-way: the client sees an error event, and no [DONE].
    with pytest.raises(openai.APIError):
        list(ask("FAIL midstream", stream=True))


def test_usage_is_recorded_for_every_kind(providers):
    client = providers.openai(providers.key)
    for k in KINDS:
        client.chat.completions.create(model=k.model, messages=[{"role": "user", "content": "count these four"}],
                                       **chat_kwargs(k))
    def recorded():
        return all(providers.usage(model=k.model)["completion_tokens"] > 0 for k in KINDS)
    wait_until(recorded, what="usage of every kind recorded")
    for k in KINDS:
        billed = httpx.get(providers.mock_urls[k.name] + "/_mock/stats").json()
        usage = providers.usage(model=k.model, estimated="false")
        # What each mock billed (reported as usage) is what was recorded;
        # failures and refusals are counted as requests but bill nothing
        # (streams cut before their usage are estimated, and left out here).
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == \
            (billed["prompt_tokens"], billed["completion_tokens"]), k.name


def test_translations_reach_the_provider_in_its_format(providers):
    client = providers.openai(providers.key)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    client.chat.completions.create(model="m-anthropic", messages=msgs, temperature=1.7)
    sent = last_request(providers, "anthropic")
    assert sent["body"]["system"] == "Be brief." and sent["body"]["max_tokens"] == 4096
    assert sent["body"]["temperature"] == 1.0
    assert sent["headers"]["anthropic-version"] == "2023-06-01" and "authorization" not in sent["headers"]

    client.chat.completions.create(model="m-gemini", messages=msgs, tools=[WEATHER_TOOL], max_tokens=5)
    sent = last_request(providers, "gemini")
    assert sent["uri"].endswith("/v1beta/models/up-gemini:generateContent")
    assert sent["body"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert "additionalProperties" not in json.dumps(sent["body"]["tools"])

    client.chat.completions.create(model="m-azure", messages=msgs)
    sent = last_request(providers, "azure")
    assert sent["uri"] == "/openai/deployments/up-azure/chat/completions?api-version=2024-10-21"
    assert sent["headers"]["api-key"] == "sk-mock-upstream"

    exchanges = lambda: httpx.get(providers.mock_urls["qianfan-v1"] + "/_mock/stats").json()["token_exchanges"]
    client.chat.completions.create(model="m-qianfan-v1", messages=msgs, temperature=0)
    before = exchanges()
    client.chat.completions.create(model="m-qianfan-v1", messages=msgs, temperature=0)
    sent = last_request(providers, "qianfan-v1")
    assert "/wenxinworkshop/chat/up-qianfan-v1?access_token=24." in sent["uri"]
    assert sent["body"]["temperature"] == 0.01 and sent["body"]["system"] == "Be brief."
    assert exchanges() == before >= 1, "the access token is cached between calls"

    client.chat.completions.create(model="m-hunyuan", messages=msgs)
    sent = last_request(providers, "hunyuan")
    assert sent["headers"]["x-tc-action"] == "ChatCompletions"
    assert sent["headers"]["authorization"].startswith("TC3-HMAC-SHA256 Credential=AKIDmock/")
    assert sent["body"]["Messages"][0] == {"Role": "system", "Content": "Be brief."}


def test_unsupported_parameters_are_refused_by_name(providers):
    client = providers.openai(providers.key)
    cases = [("m-anthropic", {"n": 2}, "n"), ("m-gemini", {"logit_bias": {"1": 1}}, "logit_bias"),
             ("m-hunyuan", {"max_tokens": 10}, "max_tokens"), ("m-qianfan-v1", {"seed": 3}, "seed"),
             ("m-dashscope", {"frequency_penalty": 0.5}, "frequency_penalty")]
    for model, extra, param in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], **extra)
        assert refused.value.body["param"] == param, model
        assert refused.value.body["code"] == "unsupported_parameter"


def test_in_stream_errors_of_native_apis(providers):
    client = providers.openai(providers.key)
    # Anthropic reports overload inside a 200 stream; it becomes a 503 before any byte was sent.
    with pytest.raises(openai.InternalServerError) as overloaded:
        list(client.chat.completions.create(model="m-anthropic", messages=[{"role": "user", "content": "FAIL 529"}],
                                            stream=True))
    assert overloaded.value.status_code == 503
    # Baidu and Tencent answer a failed stream request with a JSON body and HTTP 200.
    for model in ("m-qianfan-v1", "m-hunyuan"):
        with pytest.raises(openai.RateLimitError):
            list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "FAIL 429"}],
                                                stream=True))


def test_completions_and_responses_pass_through_where_served(providers):
    client = providers.openai(providers.key)
    text = client.completions.create(model="m-openai", prompt="say this", max_tokens=5)
    assert text.choices[0].text == " Echo: say this"
    streamed = list(client.completions.create(model="m-compatible", prompt="say this", stream=True,
                                              stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == " Echo: say this"
    response = client.responses.create(model="m-azure", input="tell me")
    assert response.output_text == "Echo: tell me" and response.usage.output_tokens == 3
    events = list(client.responses.create(model="m-openai", input="tell me", stream=True))
    assert events[-1].type == "response.completed"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="m-anthropic", prompt="x")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="m-gemini", input="x")
    wait_until(lambda: providers.usage(model="m-azure")["completion_tokens"] >= 3, what="responses usage recorded")


@pytest.mark.parametrize("model", ["m-openai", "m-anthropic", "m-gemini"])
def test_anthropic_sdk_on_messages(providers, model):
    client = anthropic.Anthropic(base_url=providers.dp_url, api_key=providers.key, max_retries=0)
    message = client.messages.create(model=model, max_tokens=100, system="You are terse.",
                                     messages=[{"role": "user", "content": "hello there"}])
    assert message.content[0].text == "Echo: hello there"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 3

    with client.messages.stream(model=model, max_tokens=100, messages=[{"role": "user", "content": "hello there"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Echo: hello there" and final.usage.output_tokens == 3

    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    message = client.messages.create(model=model, max_tokens=100, tools=tools, messages=ask)
    use = next(b for b in message.content if b.type == "tool_use")
    assert message.stop_reason == "tool_use" and use.input == {"city": "Paris"}
    with client.messages.stream(model=model, max_tokens=100, tools=tools, messages=ask) as s:
        final = s.get_final_message()
    assert any(b.type == "tool_use" and b.input == {"city": "Paris"} for b in final.content)

    answer = client.messages.create(model=model, max_tokens=100, tools=tools, messages=ask + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": "get_weather", "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "20C"}]}])
    assert "20C" in answer.content[0].text


def test_anthropic_ingress_errors_in_anthropics_format(providers):
    bad = anthropic.Anthropic(base_url=providers.dp_url, api_key="sk-sb-not-a-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        bad.messages.create(model="m-openai", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert refused.value.body["error"]["type"] == "authentication_error"
    client = anthropic.Anthropic(base_url=providers.dp_url, api_key=providers.key, max_retries=0)
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="m-anthropic", max_tokens=10, messages=[{"role": "user", "content": "FAIL 429"}])
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    # Anthropic clients list models in Anthropic's format.
    listed = [m.id for m in client.models.list()]
    assert "m-anthropic" in listed and "m-openai" in listed


# Native Anthropic passthrough: /v1/messages to an Anthropic provider goes
# as it came (apart from the model name and credentials), and comes back as
# Anthropic sent it.

MOCK_HEADERS = {"x-api-key": "sk-mock-upstream", "anthropic-version": "2023-06-01"}
CLAUDE_CODE_BETA = "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"


def claude_code_request(stream=True):
    """Shaped as Claude Code sends it: system blocks with cache_control,
    tools, thinking, metadata, a streamed answer."""
    return {
        "model": "m-anthropic", "max_tokens": 32000, "stream": stream, "top_k": 5,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": "user_abc_account_def_session_123"},
        "system": [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
                   {"type": "text", "text": "You are an interactive CLI tool that helps users with software "
                                            "engineering tasks, kept in the prompt cache.",
                    "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "Bash", "description": "Executes a bash command",
                   "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                                    "required": ["command"]}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>context</system-reminder>"},
            {"type": "text", "text": "list the files please", "cache_control": {"type": "ephemeral"}}]}],
    }


def record_of(gw, response):
    request_id = response.headers["x-request-id"]
    return wait_until(lambda: next(iter(gw.usage_records(request_id=request_id)), None),
                      what="usage record of " + request_id)


def test_anthropic_native_stream_is_relayed_byte_for_byte(providers):
    """Extended thinking streamed: every event as the provider sent it,
    thinking and signature deltas intact; the client's beta and version
    headers and every field of its body reach Anthropic."""
    body = claude_code_request()
    body["messages"][0]["content"][1].pop("cache_control")
    body["system"][1].pop("cache_control")
    headers = {"authorization": f"Bearer {providers.key}", "anthropic-version": "2023-06-01",
               "anthropic-beta": CLAUDE_CODE_BETA}
    with httpx.stream("POST", providers.dp_url + "/v1/messages", json=body, headers=headers, timeout=10) as r:
        assert r.status_code == 200, r.read()
        through_gateway = r.read()
    sent = last_request(providers, "anthropic")
    assert sent["uri"] == "/v1/messages"
    assert sent["body"] == {**body, "model": "up-anthropic"}
    assert sent["headers"]["anthropic-beta"] == CLAUDE_CODE_BETA
    assert sent["headers"]["x-api-key"] == "sk-mock-upstream" and "authorization" not in sent["headers"]
    direct = httpx.post(providers.mock_urls["anthropic"] + "/v1/messages", json={**body, "model": "up-anthropic"},
                        headers=MOCK_HEADERS, timeout=10)
    assert through_gateway == direct.content
    assert b'"type":"signature_delta"' in through_gateway and b'"type":"thinking_delta"' in through_gateway

    client = anthropic.Anthropic(base_url=providers.dp_url, api_key=providers.key, max_retries=0)
    with client.messages.stream(model="m-anthropic", max_tokens=4096, top_k=5,
                                thinking={"type": "enabled", "budget_tokens": 1024},
                                messages=[{"role": "user", "content": "why is the sky blue"}]) as s:
        kinds = [e.delta.type for e in s if e.type == "content_block_delta"]
        final = s.get_final_message()
    assert "thinking_delta" in kinds and "signature_delta" in kinds
    thinking, text = final.content
    assert thinking.type == "thinking" and thinking.signature.startswith("EqQB") and thinking.thinking
    assert text.text == "Echo: why is the sky blue"
    assert final.usage.output_tokens == len(text.text.split()) + len(thinking.thinking.split())


def test_anthropic_prompt_caching_is_counted_and_priced(providers):
    providers.admin("PUT", "/prices/up-anthropic", {
        "input_per_million": "3", "output_per_million": "15",
        "cached_input_per_million": "0.3", "cache_write_per_million": "3.75"}, expect=200)
    providers.wait_synced()
    client = anthropic.Anthropic(base_url=providers.dp_url, api_key=providers.key, max_retries=0)
    body = claude_code_request(stream=False)
    body["messages"][0]["content"][1]["text"] = "cache this turn " + uuid.uuid4().hex
    del body["model"], body["stream"]
    body["max_tokens"] = 4096
    first = client.messages.with_raw_response.create(model="m-anthropic", **body)
    written = first.parse().usage
    assert written.cache_creation_input_tokens > 0 and written.cache_read_input_tokens == 0
    with client.messages.stream(model="m-anthropic", **body) as s:
        read = s.get_final_message().usage
        response = s.response
    assert read.cache_read_input_tokens == written.cache_creation_input_tokens
    assert read.cache_creation_input_tokens == 0

    for usage, http in ((written, first.http_response), (read, response)):
        record = record_of(providers, http)
        prompt = usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
        assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, usage.output_tokens)
        assert record["cached_tokens"] == usage.cache_read_input_tokens
        assert record["cache_write_tokens"] == usage.cache_creation_input_tokens
        micros = (usage.input_tokens * 3_000_000 + usage.cache_creation_input_tokens * 3_750_000
                  + usage.cache_read_input_tokens * 300_000 + usage.output_tokens * 15_000_000)
        assert Decimal(record["cost"]) == Decimal(-(-micros // 1_000_000)) / 1_000_000, record


def test_anthropic_tool_use_streamed_natively(providers):
    client = anthropic.Anthropic(base_url=providers.dp_url, api_key=providers.key, max_retries=0)
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"},
              "cache_control": {"type": "ephemeral"}}]
    with client.messages.stream(model="m-anthropic", max_tokens=100, tools=tools,
                                messages=[{"role": "user", "content": "Weather in Paris?"}]) as s:
        partial = [e.delta.partial_json for e in s if e.type == "content_block_delta"
                   and e.delta.type == "input_json_delta"]
        final = s.get_final_message()
    assert len(partial) == 2 and json.loads("".join(partial)) == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    assert last_request(providers, "anthropic")["body"]["tools"] == tools


def test_anthropic_count_tokens(providers):
    client = anthropic.Anthropic(base_url=providers.dp_url, api_key=providers.key, max_retries=0)
    messages = [{"role": "user", "content": "count these five words"}]
    counted = client.messages.with_raw_response.count_tokens(model="m-anthropic", system="Be terse.",
                                                             messages=messages)
    # Anthropic's count (the mock counts words), forwarded.
    assert counted.parse().input_tokens == 6
    assert last_request(providers, "anthropic")["uri"] == "/v1/messages/count_tokens"
    record = record_of(providers, counted.http_response)
    assert (record["endpoint"], record["status"], record["total_tokens"]) == ("messages.count_tokens", 200, 0)
    # Other providers cannot count: the gateway's own tokenizer does.
    assert client.messages.count_tokens(model="m-openai", messages=messages).input_tokens > 0


def test_anthropic_fields_other_providers_cannot_honour_are_refused(providers):
    client = anthropic.Anthropic(base_url=providers.dp_url, api_key=providers.key, max_retries=0)
    hi = [{"role": "user", "content": "hi"}]
    for model, extra, field_name, kind in [
        ("m-openai", {"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking", "openai"),
        ("m-gemini", {"top_k": 3}, "top_k", "gemini"),
    ]:
        with pytest.raises(anthropic.BadRequestError) as refused:
            client.messages.create(model=model, max_tokens=2000, messages=hi, **extra)
        error = refused.value.body["error"]
        assert error["type"] == "invalid_request_error"
        assert f"'{field_name}'" in error["message"] and kind in error["message"], error
    # Anthropic's own refusals come back as Anthropic worded them.
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="m-anthropic", max_tokens=100, messages=hi,
                               thinking={"type": "enabled", "budget_tokens": 10})
    assert "budget_tokens" in refused.value.body["error"]["message"]


def test_translated_calls_time_out(providers):
    client = providers.openai(providers.key)
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as late:
            response = client.chat.completions.create(model="m-gemini", stream=stream,
                                                      messages=[{"role": "user", "content": "sleep-3000 please"}])
            list(response) if stream else None
        assert late.value.status_code == 504 and late.value.body["code"] == "upstream_timeout"


def test_provider_settings_are_validated_by_name(providers):
    for spec, field_name in [
        ({"name": "h", "kind": "hunyuan", "base_url": "https://h.example", "settings": {"api": "native"}}, "settings.secret_id"),
        ({"name": "a", "kind": "azure_openai", "base_url": "https://a.example", "api_key": "k"}, "settings.api_version"),
        ({"name": "q", "kind": "qianfan", "base_url": "https://q.example", "api_key": "k", "settings": {"api": "native"}}, "secret_key"),
        ({"name": "o", "kind": "openai", "base_url": "https://o.example", "settings": {"deployment": "x"}}, "settings.deployment"),
    ]:
        response = providers.admin("POST", "/providers", spec, expect=400)
        assert response.json()["error"]["message"].startswith(field_name), response.text
    shown = providers.admin("GET", "/providers/hunyuan", expect=200).json()
    assert shown["has_secret_key"] is True and "secret_key" not in shown


def test_mocks_refuse_what_the_providers_refuse(providers):
    """The mocks are only as good as their checks: each refuses a request the
    real provider would refuse, in the provider's own error format."""
    url = providers.mock_urls
    hi = [{"role": "user", "content": "hi"}]
    no_version = httpx.post(url["anthropic"] + "/v1/messages", headers={"x-api-key": "sk-mock-upstream"},
                            json={"model": "c", "max_tokens": 5, "messages": hi})
    assert no_version.status_code == 400 and no_version.json()["error"]["type"] == "invalid_request_error"
    no_max = httpx.post(url["anthropic"] + "/v1/messages", json={"model": "c", "messages": hi},
                        headers={"x-api-key": "sk-mock-upstream", "anthropic-version": "2023-06-01"})
    assert no_max.status_code == 400 and "max_tokens" in no_max.json()["error"]["message"]
    system_role = httpx.post(url["anthropic"] + "/v1/messages", headers={"x-api-key": "sk-mock-upstream", "anthropic-version": "2023-06-01"},
                             json={"model": "c", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]})
    assert system_role.status_code == 400

    bad_token = httpx.post(url["qianfan-v1"] + "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/completions?access_token=24.forged",
                           json={"messages": hi})
    assert bad_token.status_code == 200 and bad_token.json()["error_code"] == 110
    bad_client = httpx.post(url["qianfan-v1"] + "/oauth/2.0/token?grant_type=client_credentials&client_id=x&client_secret=y")
    assert bad_client.json()["error"] == "invalid_client"

    body = b'{"Model":"hunyuan-lite","Messages":[{"Role":"user","Content":"hi"}]}'
    import time
    headers = {"content-type": "application/json", "x-tc-action": "ChatCompletions", "x-tc-version": "2023-09-01",
               "x-tc-timestamp": str(int(time.time())),
               "authorization": "TC3-HMAC-SHA256 Credential=AKIDmock/2026-01-01/hunyuan/tc3_request, SignedHeaders=content-type;host, Signature=00"}
    forged = httpx.post(url["hunyuan"] + "/", content=body, headers=headers)
    assert forged.status_code == 200 and forged.json()["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"

    gemini_key = httpx.post(url["gemini"] + "/v1beta/models/g:generateContent", headers={"x-goog-api-key": "wrong"},
                            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert gemini_key.status_code == 400 and gemini_key.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    schema = httpx.post(url["gemini"] + "/v1beta/models/g:generateContent", headers={"x-goog-api-key": "sk-mock-upstream"},
                        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "tools": [{"functionDeclarations": [
                            {"name": "f", "parameters": {"type": "object", "additionalProperties": False}}]}]})
    assert schema.status_code == 400

    top_p = httpx.post(url["dashscope"] + "/api/v1/services/aigc/text-generation/generation",
                       headers={"authorization": "Bearer sk-mock-upstream", "x-dashscope-sse": "enable"},
                       json={"model": "qwen", "input": {"messages": hi}, "parameters": {"top_p": 1.0}})
    assert top_p.status_code == 200 and "event:error" in top_p.text and ":HTTP_STATUS/400" in top_p.text

    azure = httpx.post(url["azure"] + "/openai/deployments/d/chat/completions", headers={"api-key": "sk-mock-upstream"},
                       json={"messages": hi})
    assert azure.status_code == 404, "api-version is required"
