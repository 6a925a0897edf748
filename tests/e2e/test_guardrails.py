"""Guardrails through the running gateway, driven by the `openai` SDK:
personal data masked before the provider sees it (or the request refused),
denied words and patterns, a prompt ceiling, and a team's moderation
service asked before and after the provider, failing open or closed."""

import json

import httpx
import openai
import pytest

from conftest import Gateway, free_port, json_server, wait_until

pytestmark = pytest.mark.timeout(240)


class Moderation:
    """A moderation service on loopback: refuses requests that mention
    "forbidden" and answers that mention "classified"; keeps what it was asked."""

    def __init__(self):
        self.asked = []
        self.server, url = json_server(self.verdict)
        self.url = url + "/check"

    def verdict(self, _method, asked):
        self.asked.append(asked)
        text = json.dumps(asked.get("answer") if asked["stage"] == "answer" else asked["request"])
        word = "classified" if asked["stage"] == "answer" else "forbidden"
        if word in text:
            return 200, {"allow": False, "message": f"moderation: {word} content"}
        return 200, {"allow": True}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guardrails")
    gateway = Gateway(tmp, f"sqlite://{tmp}/control-plane.db")
    gateway.moderation = Moderation()
    try:
        gateway.key = gateway.setup_basic()
        routes = {
            "masked": {"pii": {}},
            "strict": {"pii": {"action": "refuse", "kinds": ["card", "national_id"]},
                       "deny": {"words": ["Project Nightingale"], "patterns": ["(?i)drop\\s+table"]},
                       "max_prompt_tokens": 60},
            "moderated": {"pii": {"kinds": ["email"]},
                          "webhook": {"url": gateway.moderation.url, "timeout_ms": 2000, "post": True}},
            "closed": {"webhook": {"url": f"http://127.0.0.1:{free_port()}/down", "timeout_ms": 300}},
            "open": {"webhook": {"url": f"http://127.0.0.1:{free_port()}/down", "timeout_ms": 300, "fail_open": True}},
        }
        for model, guardrails in routes.items():
            gateway.admin("POST", "/routes", {"model": model, "targets": [{"provider": "mock", "model": "up-" + model}],
                                              "guardrails": guardrails}, expect=201)
        gateway.wait_synced()
        yield gateway
    finally:
        gateway.moderation.server.shutdown()
        gateway.close()


def ask(gw, model, text):
    return gw.openai(gw.key).chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def sent_upstream(gw):
    return httpx.get(gw.mock_url + "/_mock/last").json()["body"]


def refusal(gw, model, text, error=openai.BadRequestError):
    with pytest.raises(error) as refused:
        ask(gw, model, text)
    return refused.value


def test_personal_data_is_masked_before_the_provider_sees_it(gw):
    text = "I am ada@example.com, card 4111 1111 1111 1111, call +1 415-555-0100 about order 2026-12-06"
    answer = ask(gw, "masked", text)
    masked = "I am [EMAIL], card [CARD], call [PHONE] about order 2026-12-06"
    assert sent_upstream(gw)["messages"][0]["content"] == masked
    assert answer.choices[0].message.content == "Echo: " + masked
    # Anthropic clients go through the same checks.
    import anthropic

    client = anthropic.Anthropic(base_url=gw.dp_url, api_key=gw.key, max_retries=0)
    client.messages.create(model="masked", max_tokens=50, messages=[{"role": "user", "content": "mail bob@example.org"}])
    assert "[EMAIL]" in json.dumps(sent_upstream(gw)["messages"])


def test_strict_routes_refuse_personal_data_denied_terms_and_long_prompts(gw):
    before = httpx.get(gw.mock_url + "/_mock/stats").json()["requests"]
    for text, words in [("my card is 4111-1111-1111-1111", "(card)"),
                        ("SSN 078-05-1120 please", "(national_id)"),
                        ("status of project nightingale?", "denied term"),
                        ("then DROP   TABLE users;", "denied term"),
                        ("word " * 100, "at most 60")]:
        error = refusal(gw, "strict", text)
        assert error.body["code"] == "guardrail_refused" and words in error.body["message"], error.body
    assert httpx.get(gw.mock_url + "/_mock/stats").json()["requests"] == before, "nothing refused reached the provider"
    assert ask(gw, "strict", "mail me at ada@example.com").choices[0].message.content.endswith("ada@example.com")
    metrics = httpx.get(gw.dp_url + "/metrics").text
    assert 'switchboard_guardrail_actions_total{guardrail="deny",action="refuse"}' in metrics


def test_the_moderation_service_sees_requests_and_answers(gw):
    asked = gw.moderation.asked
    asked.clear()
    assert ask(gw, "moderated", "hello ada@example.com").choices[0].message.content == "Echo: hello [EMAIL]"
    request, answer = asked
    assert (request["stage"], request["route"]) == ("request", "moderated")
    assert request["request"]["messages"][0]["content"] == "hello [EMAIL]", "it sees what the provider sees"
    assert answer["stage"] == "answer" and answer["answer"]["choices"][0]["message"]["content"] == "Echo: hello [EMAIL]"

    error = refusal(gw, "moderated", "something forbidden")
    assert error.body["message"] == "moderation: forbidden content"
    # The answer is refused after the provider gave it: its usage is recorded all the same.
    error = refusal(gw, "moderated", "tell me the classified plan")
    assert error.body["message"] == "moderation: classified content"
    wait_until(lambda: gw.usage(model="moderated")["requests"] == 2, what="both answered requests recorded")
    # A streamed answer is held back until the service has seen it whole.
    def stream(text):
        return gw.openai(gw.key).chat.completions.create(
            model="moderated", stream=True, messages=[{"role": "user", "content": text}])
    assert "".join(c.choices[0].delta.content or "" for c in stream("calm stream") if c.choices) == "Echo: calm stream"
    assert asked[-1]["answer"]["choices"][0]["message"]["content"] == "Echo: calm stream"
    received = []
    with pytest.raises(openai.APIError) as refused:
        for chunk in stream("classified stream"):
            received.extend(c.delta.content for c in chunk.choices if c.delta.content)
    assert refused.value.message == "moderation: classified content" and received == []


def test_a_silent_moderation_service_fails_closed_unless_told_to_fail_open(gw):
    error = refusal(gw, "closed", "hi", openai.InternalServerError)
    assert error.status_code == 503 and error.body["code"] == "guardrail_unavailable"
    assert ask(gw, "open", "hi").choices[0].message.content == "Echo: hi"


def test_guardrails_are_validated_by_field(gw):
    for guardrails, field in [({"deny": {"patterns": ["(unclosed"]}}, "guardrails.deny.patterns[0]"),
                              ({"pii": {"kinds": ["dna"]}}, "guardrails.pii.kinds"),
                              ({"max_prompt_tokens": 0}, "guardrails.max_prompt_tokens"),
                              ({"webhook": {"url": "ftp://x"}}, "guardrails.webhook.url")]:
        response = gw.admin("POST", "/routes", {"model": "bad", "targets": [{"provider": "mock", "model": "x"}],
                                                "guardrails": guardrails}, expect=400)
        assert field in response.json()["error"]["message"], response.text


def test_a_teams_guardrails_apply_on_every_route_after_the_routes_own(gw):
    team = gw.admin("POST", "/teams", {"name": "careful", "guardrails": {
        "deny": {"words": ["teamsecret"]}, "pii": {"kinds": ["phone"]}}}, expect=201).json()
    assert team["guardrails"]["deny"]["words"] == ["teamsecret"]
    key = gw.admin("POST", "/keys", {"name": "careful", "team_id": team["id"]}, expect=201).json()["key"]
    gw.wait_synced()
    client = gw.openai(key)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "the teamsecret is"}])
    answer = client.chat.completions.create(model="masked", messages=[
        {"role": "user", "content": "ada@example.com at 555-123-4567"}])
    assert answer.choices[0].message.content == "Echo: [EMAIL] at [PHONE]", "the route's, then the team's"
    assert ask(gw, "gpt-test", "the teamsecret is").choices[0].message.content.endswith("teamsecret is"), \
        "another team's key is not held to them"

    gw.admin("PATCH", f"/teams/{team['id']}", {"guardrails": None}, expect=200)
    gw.wait_synced()
    assert client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "the teamsecret is"}]).choices[0].message.content
    refused = gw.admin("PATCH", f"/keys/{gw.admin('GET', '/keys', expect=200).json()[0]['id']}",
                       {"guardrails": {}}, expect=400)
    assert "only routes and teams" in refused.json()["error"]["message"]
