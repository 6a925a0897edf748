#!/usr/bin/env python3
"""Switchboard's benchmark suite (`make bench`; `--smoke` for the short run in
`make test`). Every scenario runs the full request path (API-key auth, route
lookup, usage recorded and shipped) and is measured against the direct path
to the same mock upstream in the same run. Figures go to docs/benchmarks.md.

Load generators: wrk (closed loop: throughput, latency at concurrency 1) and
oha (open loop at a fixed rate, with latency correction); tests/src/bench_probe.rs
for what neither measures (stream timing, idle connections, streams in flight)."""

import argparse
import base64
import contextlib
import http.client
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import ADMIN_TOKEN, CLUSTER_TOKEN, ROOT, Stack, cpu_seconds, rss_kib, tree_cpu_seconds  # noqa: E402
from loopback import drop_postgres_database, postgres_database  # noqa: E402
from pki import Authority  # noqa: E402

# What the HTTPS mock allows per HTTP/2 connection (hyper's default, within the usual 100-256).
H2_STREAMS_PER_CONNECTION = 200

CHAT_LUA = ROOT / "tests" / "bench" / "chat.lua"
# Messages for chat.lua (BENCH_CONTENT): one with personal data to mask.
PII = "mail me at ada@example.com or call +1 415-555-0100, card 4111 1111 1111 1111"
CHAT_BODY = '{"model":"%s","messages":[{"role":"user","content":"benchmark me please"}]}'
# A plugin that does nothing (docs/plugins.md): what the sandbox itself costs.
EMPTY_PLUGIN = """(module (memory (export "memory") 1)
  (func (export "sb_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "sb_on_request") (param i32 i32) (result i64) (i64.const 0)))"""


class Settings:
    def __init__(self, smoke: bool, seconds: float):
        self.smoke = smoke
        self.seconds = seconds
        self.idle_connections = 300 if smoke else 50_000
        self.inflight_streams = 50 if smoke else 10_000
        # Streams at scale: chunks per stream, ms between them, ms over which they start.
        self.paced_stream = (10, 20, 200) if smoke else (100, 50, 2_000)
        self.sustained_rate = 200 if smoke else 10_000
        self.sustained_seconds = 1 if smoke else 60
        self.ingestion_seconds = 1 if smoke else 10
        self.stream_requests = 20 if smoke else 300
        self.key_scales = [2_000] if smoke else [100_000, 1_000_000]
        self.routes = 20 if smoke else 1_000
        self.propagation_writes = 5 if smoke else 100
        self.rates = [200, 500] if smoke else [1_000, 5_000]
        self.cpu_rate = 200 if smoke else 2_000


class Report:
    def __init__(self):
        self.rows = []  # (scenario, measure, direct, gateway, comparison, target)
        self.notes = []

    def row(self, scenario, measure, direct, gateway, comparison, target=""):
        self.rows.append((scenario, measure, direct, gateway, comparison, target))
        print(f"  {scenario} | {measure} | direct {direct} | gateway {gateway} | {comparison} | {target}", flush=True)


def need(tool, install):
    if shutil.which(tool):
        return
    print(f"installing {tool}: {' '.join(install)}", flush=True)
    subprocess.run(install, check=True, stdout=subprocess.DEVNULL)
    if not shutil.which(tool):
        sys.exit(f"{tool} is needed and could not be installed")


def wrk(url, key, model, connections, seconds, content=None, unique=False):
    """chat.lua's request; `content`: its message; `unique`: a different message every request."""
    env = {**os.environ, "BENCH_KEY": key, "BENCH_MODEL": model}
    if content:
        env["BENCH_CONTENT"] = content
    if unique:
        env["BENCH_UNIQUE"] = "1"
    threads = 1 if connections == 1 else 2
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", CHAT_LUA, f"{url}/chat/completions"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT"))
    return {k: float(v) for k, v in (part.split("=") for part in line.split()[1:])}


def oha(url, key, model, rate, seconds, connections=64):
    out = subprocess.run(
        # A request count, not a duration: oha aborts what is in flight at a deadline.
        ["oha", "-n", str(int(rate * seconds)), "-q", str(rate), "-c", str(connections), "--latency-correction",
         "--no-tui", "--output-format", "json", "-m", "POST",
         "-H", f"authorization: Bearer {key}", "-H", "content-type: application/json",
         "-d", CHAT_BODY % model, f"{url}/chat/completions"],
        check=True, capture_output=True, text=True,
    ).stdout
    result = json.loads(out)
    codes = result.get("statusCodeDistribution", {})
    ok = codes.get("200", 0)
    errors = sum(n for code, n in codes.items() if code != "200") + sum(result.get("errorDistribution", {}).values())
    pct = result["latencyPercentiles"]
    return {"ok": ok, "errors": errors, "p50": pct["p50"] * 1e6, "p99": pct["p99"] * 1e6, "p999": pct["p99.9"] * 1e6}


def probe(bin_dir, *args, stdin=None):
    return subprocess.Popen([str(bin_dir / "bench-probe"), *map(str, args)], stdin=stdin, stdout=subprocess.PIPE, text=True)


def us(value):
    return f"{value:,.0f} us"


def added(gateway, direct):
    return f"{gateway - direct:+,.0f} us"


class Bench:
    def __init__(self, settings: Settings, bin_dir: Path, report: Report):
        self.s = settings
        self.bin_dir = bin_dir
        self.report = report

    # The main stack: one control plane, one data plane, four mocks.
    def setup(self):
        st = self.stack = Stack(self.bin_dir)
        gap = 2 if self.s.smoke else 10
        self.mock_fast = st.mock()
        self.mock_fast_pid = st.procs[-1].pid
        self.mock_slow = st.mock(latency_ms=50)
        self.mock_stream = st.mock(chunks=20, chunk_gap_ms=gap)
        chunks, gap, _ = self.s.paced_stream
        self.mock_paced = st.mock(chunks=chunks, chunk_gap_ms=gap)
        # The same, as a hosted provider answers: HTTPS, HTTP/2 by ALPN, from a CA of the bench's own.
        self.provider_ca = Authority(st.work, "provider-ca")
        cert, key, _ = self.provider_ca.issue("provider", "provider", ips=["127.0.0.1"])
        self.mock_paced_tls = st.mock(chunks=chunks, chunk_gap_ms=gap, tls_cert=cert, tls_key=key,
                                      max_concurrent_streams=H2_STREAMS_PER_CONNECTION)
        st.control_plane(config_poll_ms=200)
        self.dp = st.data_plane()
        # The reference: a plain reverse proxy with as many workers as the data plane has threads.
        need("nginx", ["apt-get", "install", "-y", "-q", "nginx"])
        self.nginx_fast = st.nginx(self.mock_fast, os.cpu_count() or 1)
        self.nginx_pid = st.procs[-1].pid
        for name, url in [("fast", self.mock_fast), ("slow", self.mock_slow), ("stream", self.mock_stream),
                          ("paced", self.mock_paced), ("paced-h2", self.mock_paced_tls)]:
            st.provider(name, url)
            st.route(name, name)
        self.key = st.key()
        st.wait_model(self.dp, self.key, "paced")

    def throughput(self):
        d = wrk(self.mock_fast, "direct", "load", 32, self.s.seconds)
        n = wrk(self.nginx_fast, "direct", "load", 32, self.s.seconds)
        g = wrk(self.dp.url, self.key, "fast", 32, self.s.seconds)
        self.report.row("1r. nginx reverse proxy, concurrency 32", "requests/s", f"{d['rps']:,.0f}", f"{n['rps']:,.0f}",
                        f"ratio {n['rps'] / d['rps']:.2f}", "reference")
        self.report.row("1. throughput, concurrency 32", "requests/s", f"{d['rps']:,.0f}", f"{g['rps']:,.0f}",
                        f"ratio {g['rps'] / d['rps']:.2f}; to nginx {g['rps'] / n['rps']:.2f}", ">= 0.80 of nginx")
        self.check_errors("1", d, g)
        self.check_errors("1r", d, n)
        # The same with the control plane paused, as in 2b: what the data plane itself reaches against nginx,
        # without the control plane's ingestion of its usage on the same two cores. Usage is journaled
        # meanwhile and must all arrive once the control plane runs again.
        before = self.settled_usage("fast")
        with self.control_plane_paused():
            p = wrk(self.dp.url, self.key, "fast", 32, self.s.seconds)
        self.report.row("1c. throughput, concurrency 32, control plane paused", "requests/s", f"{d['rps']:,.0f}",
                        f"{p['rps']:,.0f}", f"ratio {p['rps'] / d['rps']:.2f}; to nginx {p['rps'] / n['rps']:.2f}")
        self.check_errors("1c", d, p)
        recorded = self.stack.wait_usage(before + int(p["requests"]), model="fast") - before
        if recorded < p["requests"]:
            self.report.notes.append(f"Scenario 1c: usage lost: {recorded:,} records for {p['requests']:,.0f} requests.")
        d = wrk(self.mock_slow, "direct", "load", 256, self.s.seconds)
        g = wrk(self.dp.url, self.key, "slow", 256, self.s.seconds)
        self.report.row("1b. throughput, 50 ms upstream, concurrency 256", "requests/s", f"{d['rps']:,.0f}",
                        f"{g['rps']:,.0f}", f"ratio {g['rps'] / d['rps']:.2f}")
        self.check_errors("1b", d, g)

    def check_errors(self, scenario, direct, gateway):
        if direct["errors"] or gateway["errors"]:
            self.report.notes.append(f"Scenario {scenario}: errors direct {direct['errors']:.0f}, gateway {gateway['errors']:.0f}.")

    def settled_usage(self, model):
        """The control plane's count of usage records once it stops moving (they are shipped in batches)."""
        seen = self.stack.usage_requests(model=model)
        while True:
            time.sleep(1)
            now = self.stack.usage_requests(model=model)
            if now == seen:
                return seen
            seen = now

    @contextlib.contextmanager
    def control_plane_paused(self):
        os.kill(self.stack.cp.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.stack.cp.pid, signal.SIGCONT)

    def latency_c1(self):
        d = wrk(self.mock_fast, "direct", "load", 1, self.s.seconds)
        n = wrk(self.nginx_fast, "direct", "load", 1, self.s.seconds)
        g = wrk(self.dp.url, self.key, "fast", 1, self.s.seconds)
        for p, field in (("P50", "p50_us"), ("P99", "p99_us")):
            self.report.row("2r. nginx reverse proxy, concurrency 1", p, us(d[field]), us(n[field]),
                            added(n[field], d[field]), "reference")
        nginx_adds = max(n["p50_us"] - d["p50_us"], 1)
        self.report.row("2. latency, concurrency 1", "P50", us(d["p50_us"]), us(g["p50_us"]),
                        f"{added(g['p50_us'], d['p50_us'])}; {(g['p50_us'] - d['p50_us']) / nginx_adds:.1f}x what nginx adds",
                        "<= +50 us, <= 2x nginx's")
        self.report.row("2. latency, concurrency 1", "P99", us(d["p99_us"]), us(g["p99_us"]), added(g["p99_us"], d["p99_us"]), "<= +250 us")
        self.check_errors("2", d, g)
        # The same with the control plane paused (SIGSTOP) for the run: the data plane's own cost, without the
        # control plane's threads (usage ingestion, polls) on the same two cores. Usage waits in the data
        # plane's queue and journal, and is sent once the control plane answers again. (A data plane told to
        # ship late still sent a batch every 10,000 records, the most a batch holds.)
        with self.control_plane_paused():
            g = wrk(self.dp.url, self.key, "fast", 1, self.s.seconds)
        self.check_errors("2b", d, g)
        for p, field in (("P50", "p50_us"), ("P99", "p99_us")):
            self.report.row("2b. latency, concurrency 1, control plane paused", p, us(d[field]), us(g[field]),
                            added(g[field], d[field]), "")

    def fixed_rate(self):
        for rate in self.s.rates:
            d = oha(self.mock_fast, "direct", "load", rate, self.s.seconds)
            g = oha(self.dp.url, self.key, "fast", rate, self.s.seconds)
            target = "<= +1 ms" if rate <= 1000 else ""
            for name, field in [("P50", "p50"), ("P99", "p99"), ("P99.9", "p999")]:
                self.report.row(f"3. latency at {rate:,} req/s", name, us(d[field]), us(g[field]), added(g[field], d[field]),
                                target if name == "P99" else "")
            self.report.row(f"3. latency at {rate:,} req/s", "errors", f"{d['errors']} of {d['ok'] + d['errors']}",
                            f"{g['errors']} of {g['ok'] + g['errors']}", "", "no errors")

    def streaming(self):
        args = ["stream", "--model", "stream", "--requests", self.s.stream_requests, "--concurrency", 4]
        d = json.loads(probe(self.bin_dir, *args, "--url", self.mock_stream).communicate()[0])
        g = json.loads(probe(self.bin_dir, *args, "--url", self.dp.url, "--key", self.key).communicate()[0])
        for name, field in [("time to first byte", "ttfb_us"), ("gap between chunks", "gap_us")]:
            for p in ("p50", "p99"):
                target = "<= +100 us" if field == "ttfb_us" and p == "p50" else ""
                self.report.row("4. streaming", f"{name} {p.upper()}", us(d[field][p]), us(g[field][p]), added(g[field][p], d[field][p]), target)
        self.report.row("4. streaming", "body frames per stream", f"{d['frames_per_stream']:.1f}", f"{g['frames_per_stream']:.1f}",
                        "equal: relayed as they arrive" if abs(d["frames_per_stream"] - g["frames_per_stream"]) < 0.5 else "differ",
                        "never batched")
        if d["errors"] or g["errors"]:
            self.report.notes.append(f"Scenario 4: errors direct {d['errors']}, gateway {g['errors']}.")

    def hold_idle(self, n):
        """Holds n keep-alive connections open, each after one request;
        answers (connections held, RSS while held, RSS after they closed)."""
        pid = self.dp.proc.pid
        p = probe(self.bin_dir, "idle", "--connections", n, "--url", self.dp.url, "--key", self.key, "--model", "fast", stdin=subprocess.PIPE)
        ready = p.stdout.readline().split()
        held = int(ready[1]) if len(ready) == 2 else 0
        time.sleep(1)
        during = rss_kib(pid)
        p.stdin.write("\n")
        p.stdin.flush()
        p.communicate(timeout=120)
        time.sleep(2)
        return held, during, rss_kib(pid)

    def memory(self):
        pid = self.dp.proc.pid
        n = self.s.idle_connections
        before = rss_kib(pid)
        held, during, after = self.hold_idle(n)
        # A second round shows whether closed connections left anything behind.
        held_again, during_again, after_again = self.hold_idle(n)
        per = (during - before) / max(held, 1)
        self.report.row(f"5. memory, {n:,} idle keep-alive connections", "RSS before / held / after",
                        "", f"{before / 1024:.1f} / {during / 1024:.1f} / {after / 1024:.1f} MiB; "
                        f"second round held / after: {during_again / 1024:.1f} / {after_again / 1024:.1f} MiB",
                        f"{per:.1f} KiB per connection", "< 16 KiB each, < 1 GiB, back near the start after")
        if held != n or held_again != n:
            self.report.notes.append(f"Scenario 5: only {min(held, held_again)} of {n} connections were held open.")

    def streams(self):
        """Many streams at once from a paced mock (chunks a fixed gap apart),
        started over a ramp shorter than a stream, so all are in flight
        together: the gaps the client sees, direct and through the gateway;
        the gateway's memory per open stream; every stream complete and
        recorded. A tenth as many first: what the gateway adds while the
        machine still has CPU to spare. Each size twice: from a plain HTTP/1.1
        provider (a connection per stream), then from an HTTPS one (HTTP/2)."""
        for n in (self.s.inflight_streams // 10, self.s.inflight_streams):
            direct = self.paced_streams(n)
            # Then as from a hosted provider: multiplexed over HTTPS/HTTP/2 connections, as many per
            # worker as the provider's stream limit needs (against the plain mock's direct figures).
            self.paced_streams(n, direct=direct, model="paced-h2",
                               label=f"10h. {n:,} streams at once from an HTTPS provider (HTTP/2)",
                               flags=("--upstream-ca", self.provider_ca.path,
                                      "--upstream-http2-connections", -(-n // H2_STREAMS_PER_CONNECTION)))

    def paced_streams(self, n, direct=None, model="paced", label=None, flags=()):
        """One run of `n` streams through a fresh data plane started with `flags`;
        answers the direct run's figures (measured unless given)."""
        d = direct
        chunks, gap, ramp = self.s.paced_stream
        args = ["streams", "--concurrency", n, "--ramp-ms", ramp, "--model", model]
        if d is None:
            probing = probe(self.bin_dir, *args, "--url", self.mock_paced)
            probing.stdout.readline()
            d = json.loads(probing.communicate(timeout=600)[0])
        # A data plane of its own: memory freed by earlier scenarios would hide what streams take.
        dp = self.stack.data_plane(*flags)
        self.stack.wait_model(dp, self.key, model)
        pid = dp.proc.pid
        recorded_before = self.stack.usage_requests(model=model)
        before = rss_kib(pid)
        p = probe(self.bin_dir, *args, "--url", dp.url, "--key", self.key)
        p.stdout.readline()
        during = rss_kib(pid)
        g = json.loads(p.communicate(timeout=600)[0])
        recorded = self.stack.wait_usage(recorded_before + n, model=model) - recorded_before
        time.sleep(2)
        after = rss_kib(pid)
        self.stack.stop(dp)
        scenario = f"{label or f'10. {n:,} streams at once'}, {chunks} chunks {gap} ms apart"
        for q in ("p50", "p99"):
            self.report.row(scenario, f"gap between chunks {q.upper()}", us(d["gap_us"][q]), us(g["gap_us"][q]),
                            added(g["gap_us"][q], d["gap_us"][q]), "<= +1 ms" if q == "p99" else "")
        self.report.row(scenario, "RSS before / streaming / after", "",
                        f"{before / 1024:.1f} / {during / 1024:.1f} / {after / 1024:.1f} MiB",
                        f"{(during - before) / n:.1f} KiB per stream", "<= 32 KiB per stream")
        self.report.row(scenario, "streams complete ([DONE]); usage records written",
                        f"{n - d['errors'] - d['incomplete']:,} of {n:,}",
                        f"{n - g['errors'] - g['incomplete']:,} of {n:,}; {recorded:,} records", "", "all")
        if d["errors"] or g["errors"] or g["incomplete"] or recorded != n:
            self.report.notes.append(f"Scenario {scenario.split('.')[0]}: errors direct {d['errors']}, gateway "
                                     f"{g['errors']}; incomplete {g['incomplete']}; {recorded} of {n} usage records.")
        return d

    def tracing(self):
        """What exporting traces costs: throughput (concurrency 32) and latency
        (concurrency 1) of fresh data planes without an exporter, and with
        every request traced or 1% of them, sent over OTLP/gRPC to a collector
        that takes and drops them."""
        collector, port = otlp_sink()
        planes = []
        try:
            for label, ratio in (("off", None), ("100%", "1"), ("1%", "0.01")):
                env = None if ratio is None else {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                    "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": ratio}
                dp = self.stack.data_plane(env=env)
                self.stack.wait_model(dp, self.key, "fast")
                planes.append((label, dp))
            off = None
            for label, dp in planes:
                t = wrk(dp.url, self.key, "fast", 32, self.s.seconds)
                c1 = wrk(dp.url, self.key, "fast", 1, self.s.seconds)
                off = off or (t, c1)
                self.report.row("13. traces over OTLP", f"{label}: requests/s at c=32; P50 / P99 at c=1", "",
                                f"{t['rps']:,.0f}; {us(c1['p50_us'])} / {us(c1['p99_us'])}",
                                f"{t['rps'] / off[0]['rps']:.2f} of off; P50 {added(c1['p50_us'], off[1]['p50_us'])}",
                                "off costs nothing" if label == "off" else "")
                self.check_errors("13", t, c1)
        finally:
            for _, dp in planes:
                self.stack.stop(dp)
            collector.stop(0)

    def cpu(self):
        rate, seconds = self.s.cpu_rate, self.s.seconds
        mock_pid = self.mock_fast_pid
        before = cpu_seconds(mock_pid)
        d = oha(self.mock_fast, "direct", "load", rate, seconds)
        mock_cost = (cpu_seconds(mock_pid) - before) / max(d["ok"], 1) * 1e6
        before = tree_cpu_seconds(self.nginx_pid)
        n = oha(self.nginx_fast, "direct", "load", rate, seconds)
        nginx_cost = (tree_cpu_seconds(self.nginx_pid) - before) / max(n["ok"], 1) * 1e6
        before, cp_before = cpu_seconds(self.dp.proc.pid), cpu_seconds(self.stack.cp.pid)
        g = oha(self.dp.url, self.key, "fast", rate, seconds)
        time.sleep(1.5)  # the last usage batch reaches the control plane
        gateway_cost = (cpu_seconds(self.dp.proc.pid) - before) / max(g["ok"], 1) * 1e6
        cp_cost = (cpu_seconds(self.stack.cp.pid) - cp_before) / max(g["ok"], 1) * 1e6
        self.report.row(f"6r. nginx reverse proxy, CPU per request at {rate:,} req/s", "process CPU (user+system)",
                        f"{mock_cost:.1f} us (mock)", f"{nginx_cost:.1f} us", f"{nginx_cost / mock_cost:.1f}x the mock",
                        "reference")
        self.report.row(f"6. CPU per request at {rate:,} req/s", "process CPU (user+system)", f"{mock_cost:.1f} us (mock)",
                        f"{gateway_cost:.1f} us", f"{gateway_cost / mock_cost:.1f}x the mock; {gateway_cost / nginx_cost:.1f}x nginx",
                        "report")
        self.report.row(f"6. CPU per request at {rate:,} req/s", "control plane, ingesting the usage", "",
                        f"{cp_cost:.1f} us", "", "")

    def instructions(self):
        """Instructions per request, counted by callgrind on a data plane of its own: repeatable whatever
        else the machine is doing, so a change to the request path can be judged by a few hundred
        instructions where the timed scenarios move by tens of percent."""
        need("valgrind", ["apt-get", "install", "-y", "-q", "valgrind"])
        requests = 200 if self.s.smoke else 2_000
        counts = self.stack.work / "callgrind.out"
        dp = self.stack.data_plane(wrap=["valgrind", "--tool=callgrind", f"--callgrind-out-file={counts}"])
        self.stack.wait_model(dp, self.key, "fast")

        def dump():  # each dump holds what was counted since the one before
            subprocess.run(["callgrind_control", "--dump", str(dp.proc.pid)], check=True, capture_output=True)

        # Offered at up to that many a second: under valgrind the data plane answers far fewer.
        oha(dp.url, self.key, "fast", requests // 4, 1, connections=4)  # warm: connections, pools, first uses
        dump()
        answered = oha(dp.url, self.key, "fast", requests, 1, connections=4)
        dump()
        self.stack.stop(dp)
        if answered["errors"]:
            self.report.notes.append(f"Scenario 16: {answered['errors']:.0f} errors; counted per answered request.")
        requests = max(answered["ok"], 1)
        measured = sorted(self.stack.work.glob("callgrind.out.*"), key=lambda p: int(p.suffix[1:]))[1]
        listing = subprocess.run(["callgrind_annotate", "--auto=no", "--inclusive=no", "--threshold=100", str(measured)],
                                 check=True, capture_output=True, text=True).stdout

        def counted(matches):
            return sum(int(line.split()[0].replace(",", "")) for line in listing.splitlines()
                       if line.strip() and line.split()[0].replace(",", "").isdigit() and matches(line))

        total = counted(lambda line: "PROGRAM TOTALS" in line)
        # Valgrind counts every iteration of the `rep movsb` glibc's memcpy uses for large copies as an
        # instruction, i.e. one per byte moved: shown apart, not mixed into the count that tracks the code.
        copies = counted(lambda line: "memmove" in line or "memcpy" in line)
        malloc = counted(lambda line: "/malloc/" in line)
        rest = total - copies
        self.report.row(f"16. instructions per request (callgrind, {requests:,} requests, concurrency 4)",
                        "data plane, all threads, memcpy aside", "", f"{rest / requests:,.0f}",
                        f"of which malloc/free {malloc / rest:.0%}; memcpy adds {copies / requests:,.0f}", "report")

    def limits(self):
        """What the limits step costs: the same load through a key under rate limits, a quota and a
        budget (in process, never reached) and through the plain key, one after the other."""
        st = self.stack
        st.admin("PUT", "prices/load", {"input_per_million": "1", "output_per_million": "2"})
        limited = st.admin("POST", "keys", {"name": "limited", "models": ["fast"], "budget": {"amount": "1000000000"},
                                            "limits": {"rpm": 10**9, "tpm": 10**12, "max_requests": 10**12}})["key"]
        st.wait_model(self.dp, limited, "fast")
        plain = wrk(self.dp.url, self.key, "fast", 32, self.s.seconds)
        capped = wrk(self.dp.url, limited, "fast", 32, self.s.seconds)
        self.report.row("9. limits (rpm, tpm, quota, budget), concurrency 32", "requests/s, plain key vs limited key",
                        f"{plain['rps']:,.0f}", f"{capped['rps']:,.0f}", f"ratio {capped['rps'] / plain['rps']:.2f}", "")
        self.check_errors("9", plain, capped)
        plain = wrk(self.dp.url, self.key, "fast", 1, self.s.seconds)
        capped = wrk(self.dp.url, limited, "fast", 1, self.s.seconds)
        self.report.row("9. limits (rpm, tpm, quota, budget), concurrency 1", "P50, plain key vs limited key",
                        us(plain["p50_us"]), us(capped["p50_us"]), added(capped["p50_us"], plain["p50_us"]), "")
        self.check_errors("9", plain, capped)

    def cache(self):
        """The response cache: hits against the provider they replace (the 50 ms mock) and against the
        mock that answers at once (what a hit itself costs), and what a miss (a lookup that finds
        nothing, then the answer stored) adds over a route without a cache."""
        st = self.stack
        # wrk's body sets no temperature: the routes cache sampled answers too.
        cache = {"ttl_seconds": 3600, "nondeterministic": True}
        for model, provider in (("cached-slow", "slow"), ("cached-fast", "fast"), ("missing", "fast")):
            st.admin("POST", "routes", {"model": model, "targets": [{"provider": provider, "model": "load"}],
                                        "cache": cache})
        st.wait_model(self.dp, self.key, "missing")
        for model, mock, what in (("cached-slow", self.mock_slow, "50 ms provider"),
                                  ("cached-fast", self.mock_fast, "instant mock")):
            wrk(self.dp.url, self.key, model, 1, 1)  # the one miss that fills the entry
            for connections in (32, 1):
                d = wrk(mock, "direct", "load", connections, self.s.seconds)
                g = wrk(self.dp.url, self.key, model, connections, self.s.seconds)
                scenario = f"14. cache hits vs the {what}, concurrency {connections}"
                target = "a hit beats the provider" if mock == self.mock_slow else ""
                self.report.row(scenario, "requests/s", f"{d['rps']:,.0f}", f"{g['rps']:,.0f}",
                                f"ratio {g['rps'] / d['rps']:.2f}", target)
                self.report.row(scenario, "P50", us(d["p50_us"]), us(g["p50_us"]), added(g["p50_us"], d["p50_us"]), "")
                self.check_errors("14", d, g)
        for connections in (32, 1):
            plain = wrk(self.dp.url, self.key, "fast", connections, self.s.seconds, unique=True)
            time.sleep(1)  # a new second: the next run's bodies differ from this one's
            miss = wrk(self.dp.url, self.key, "missing", connections, self.s.seconds, unique=True)
            scenario = f"14b. cache misses, concurrency {connections}"
            self.report.row(scenario, "requests/s, no cache vs every request a miss", f"{plain['rps']:,.0f}",
                            f"{miss['rps']:,.0f}", f"ratio {miss['rps'] / plain['rps']:.2f}", "")
            self.report.row(scenario, "P50, no cache vs every request a miss", us(plain["p50_us"]), us(miss["p50_us"]),
                            added(miss["p50_us"], plain["p50_us"]), "")
            self.check_errors("14b", plain, miss)

    def guardrails(self):
        """What guardrails cost on the request path: PII detection (every kind; the benchmark's prompt
        holds none, so it is scanned, not rewritten) and a deny-list; and a plugin that does nothing
        (its module instantiated, given the body, answering `continue`), against the plain route."""
        st = self.stack
        empty = subprocess.run([self.bin_dir / "wat2wasm", "-"], input=EMPTY_PLUGIN.encode(), capture_output=True,
                               check=True).stdout
        for model, guardrails in (("guarded", {"pii": {}, "deny": {"words": ["nightingale"]}}),
                                  ("plugged", {"plugins": [{"name": "empty",
                                                            "wasm_base64": base64.b64encode(empty).decode()}]})):
            st.admin("POST", "routes", {"model": model, "targets": [{"provider": "fast", "model": "load"}],
                                        "guardrails": guardrails})
        st.wait_model(self.dp, self.key, "plugged")
        for model, what, content in (("guarded", "15. guardrails (PII, deny-list), nothing to mask", None),
                                     ("guarded", "15. guardrails (PII, deny-list), 3 items masked", PII),
                                     ("plugged", "15b. an empty plugin", None)):
            for connections in (32, 1):
                plain = wrk(self.dp.url, self.key, "fast", connections, self.s.seconds, content)
                guarded = wrk(self.dp.url, self.key, model, connections, self.s.seconds, content)
                scenario = f"{what}, concurrency {connections}"
                self.report.row(scenario, "requests/s, plain route vs guarded", f"{plain['rps']:,.0f}",
                                f"{guarded['rps']:,.0f}", f"ratio {guarded['rps'] / plain['rps']:.2f}", "")
                self.report.row(scenario, "P50, plain route vs guarded", us(plain["p50_us"]), us(guarded["p50_us"]),
                                added(guarded["p50_us"], plain["p50_us"]), "")
                self.check_errors(what.split(".")[0], plain, guarded)

    def propagation(self):
        planes = [self.dp, self.stack.data_plane(), self.stack.data_plane()]
        conns = [http.client.HTTPConnection("127.0.0.1", dp.port, timeout=10) for dp in planes]
        headers = {"authorization": f"Bearer {self.key}"}

        def has(conn, model):
            conn.request("GET", f"/v1/models/{model}", headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status == 200

        delays, writes = [], []
        for i in range(self.s.propagation_writes):
            model = f"prop-{i}-{secrets.token_hex(3)}"
            started = time.monotonic()
            self.stack.route(model, "fast")
            writes.append(time.monotonic() - started)
            pending = list(conns)
            while pending:
                pending = [c for c in pending if not has(c, model)]
                if time.monotonic() - started > 30:
                    raise RuntimeError("a write did not reach every data plane in 30 s")
            delays.append((time.monotonic() - started) * 1e6)
        delays.sort()
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        self.report.row(f"8. propagation to 3 data planes, {len(delays)} writes", "admin write -> all applied",
                        "", f"P50 {statistics.median(delays) / 1000:.1f} ms, P99 {p99 / 1000:.1f} ms "
                        f"(the admin write's own answer: P50 {statistics.median(writes) * 1000:.1f} ms)", "", "P99 < 1 s")

    def config_scale(self):
        """Keys (a tenth of them with budgets) and routes written straight
        into the SQLite database (the admin API would take hours for a million
        keys), marked as older than the change log, as a restore would leave
        them: three data planes take them as a full snapshot. Then, with them
        loaded: keys created through the admin API, timed until every data
        plane serves them, and what each change costs on the wire; a data
        plane that reconnects after 100 changes; and 100 simulated data planes
        on the same control plane (tests/src/cluster_load.rs)."""
        window = 5 if self.s.smoke else 30
        for keys in self.s.key_scales:
            st = Stack(self.bin_dir)
            try:
                mock = st.mock()
                st.control_plane(config_poll_ms=100)
                planes = [st.data_plane() for _ in range(3)]
                dp = planes[0]
                st.provider("fast", mock)
                st.route("fast", "fast")
                key = st.key()
                for plane in planes:
                    st.wait_model(plane, key, "fast")
                scenario = f"7. config scale, {keys:,} keys ({keys // 10:,} with budgets), {self.s.routes:,} routes"
                latency = ["latency", "--url", dp.url, "--key", key, "--model", "fast"]
                quiet = json.loads(probe(self.bin_dir, *latency, "--seconds", max(1, round(self.s.seconds))).communicate()[0])
                snapshots = [p.metric('switchboard_config_apply_seconds_count{kind="snapshot"}') or 0 for p in planes]
                apply_before = dp.metric('switchboard_config_apply_seconds_sum{kind="snapshot"}') or 0.0
                build_before = st.cp_metric("switchboard_snapshot_build_seconds_sum") or 0.0
                seed(st.db, keys, self.s.routes)
                rss_before = rss_kib(dp.proc.pid)
                loader = probe(self.bin_dir, *latency, "--seconds", window)
                time.sleep(0.5)
                seeded_at = restore_version(st.db)
                deadline = time.monotonic() + window
                for plane, before in zip(planes, snapshots):
                    while (plane.metric('switchboard_config_apply_seconds_count{kind="snapshot"}') or 0) == before:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"a data plane did not apply the large snapshot within {window} s")
                        time.sleep(0.02)
                applied_at = time.time()
                visible = time.monotonic() - seeded_at
                applied = (dp.metric('switchboard_config_apply_seconds_sum{kind="snapshot"}') or 0.0) - apply_before
                built = (st.cp_metric("switchboard_snapshot_build_seconds_sum") or 0.0) - build_before
                during = json.loads(loader.communicate()[0])
                # The apply ran in the `applied` seconds before it was seen (polled every 20 ms).
                start_us, end_us = (applied_at - applied - 0.03) * 1e6, applied_at * 1e6
                in_apply = [took for at, took in during["slow"] if start_us <= at + took and at <= end_us]
                self.report.row(scenario, "full snapshot: apply on the data plane (decode, index, swap)", "",
                                f"{applied:.2f} s", "", "< 2 s")
                self.report.row(scenario, "full snapshot: database write -> served by 3 data planes", "",
                                f"{visible:.1f} s, of which the control plane's read and encode {built:.1f} s", "", "")
                self.report.row(scenario, "requests at concurrency 1 slower than 1 ms", "",
                                f"during the data plane's apply: {len(in_apply)}"
                                f"{f' (max {max(in_apply):,} us)' if in_apply else ''}; across the whole publish: "
                                f"{len(during['slow'])} of {during['requests']:,} (max {during['max_us']:,} us); "
                                f"before it: {len(quiet['slow'])} of {quiet['requests']:,} (max {quiet['max_us']:,} us)",
                                "", "none during the apply")
                if quiet["errors"] or during["errors"]:
                    self.report.notes.append(f"Scenario 7: errors before {quiet['errors']}, during {during['errors']}.")

                # One key at a time through the admin API, until all three serve it.
                delta_bytes = [p.metric('switchboard_config_received_bytes_total{kind="delta"}') or 0 for p in planes]
                creates = 5 if self.s.smoke else 50
                delays = []
                for i in range(creates):
                    started = time.monotonic()
                    secret = st.key()
                    for plane in planes:
                        st.wait_model(plane, secret, "fast", timeout=30)
                    delays.append(time.monotonic() - started)
                delays.sort()
                p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
                per_change = max((p.metric('switchboard_config_received_bytes_total{kind="delta"}') or 0) - before
                                 for p, before in zip(planes, delta_bytes)) / creates
                self.report.row(scenario, f"key created -> served by 3 data planes, {creates} keys", "",
                                f"P50 {statistics.median(delays) * 1000:.0f} ms, P99 {p99 * 1000:.0f} ms", "", "P99 < 1 s")
                self.report.row(scenario, "bytes sent to a data plane per key created", "",
                                f"{per_change:,.0f} B", "", "< 16 KiB")
                self.report.row(scenario, "RSS with the keys loaded: control plane / data planes", "",
                                f"{rss_kib(st.cp.pid) / 1024:.0f} MiB / "
                                + ", ".join(f"{rss_kib(p.proc.pid) / 1024:.0f}" for p in planes) + " MiB"
                                + f" (a data plane before the keys: {rss_before / 1024:.0f} MiB)", "", "< 1 GiB each")

                # A data plane away for 100 changes gets those, not the keys.
                away = planes[2]
                st.stop(away)
                missed = [st.key() for _ in range(5 if self.s.smoke else 100)]
                back = st.data_plane(port=away.port, index=away.index)
                st.wait_model(back, missed[-1], "fast", timeout=60)
                got_snapshot = back.metric('switchboard_config_received_bytes_total{kind="snapshot"}') or 0
                got_delta = back.metric('switchboard_config_received_bytes_total{kind="delta"}') or 0
                self.report.row(scenario, f"data plane back after {len(missed)} changes: what it received", "",
                                f"{got_delta:,.0f} B of deltas, {got_snapshot:,.0f} B of snapshot", "",
                                "the changes, not the keys")
                planes[2] = back

                self.simulated_data_planes(st, keys, scenario)
            finally:
                st.close()

    def simulated_data_planes(self, st, keys, scenario):
        """100 config streams (config + usage) on the control plane holding the keys."""
        streams = 10 if self.s.smoke else 100
        cpu_before = cpu_seconds(st.cp.pid)
        count_before = st.cp_metric("switchboard_spend_count_seconds_sum") or 0.0
        holders_before = st.cp_metric("switchboard_spend_holders_counted_total") or 0.0
        started = time.monotonic()
        out = subprocess.run(
            [str(self.bin_dir / "cluster-load"), "--control-plane", f"http://127.0.0.1:{st.grpc_port}",
             "--cluster-token", CLUSTER_TOKEN, "--admin-url", f"http://127.0.0.1:{st.admin_port}",
             "--admin-token", ADMIN_TOKEN, "--streams", str(streams), "--creates", "5" if self.s.smoke else "20",
             "--usage-seconds", "2" if self.s.smoke else "10", "--usage-keys", str(max(1, keys // 10))],
            check=True, capture_output=True, text=True, timeout=600).stdout
        elapsed = time.monotonic() - started
        result = json.loads(out)
        cpu = cpu_seconds(st.cp.pid) - cpu_before
        time.sleep(2)  # the leader's last counts
        counted = (st.cp_metric("switchboard_spend_holders_counted_total") or 0.0) - holders_before
        counting = (st.cp_metric("switchboard_spend_count_seconds_sum") or 0.0) - count_before
        p = result["propagation_ms"]
        self.report.row(scenario, f"{streams} simulated data planes: key created -> received by all", "",
                        f"P50 {p['p50']:.0f} ms, P99 {p['p99']:.0f} ms, max {p['max']:.0f} ms "
                        f"({result['bytes_per_stream_per_change']:,} B per stream per change)", "", "")
        self.report.row(scenario, f"{streams} simulated data planes: usage ingestion", "",
                        f"{result['usage_records_per_second']:,.0f} records/s "
                        f"({result['usage_records']:,} records for {max(1, keys // 10):,} budgeted keys)", "", "")
        self.report.row(scenario, f"{streams} simulated data planes: control plane", "",
                        f"CPU {cpu / elapsed * 100:.0f}% of a core over the run, RSS {rss_kib(st.cp.pid) / 1024:.0f} MiB; "
                        f"the leader's spend counts took {counting:.1f} s (wall clock, SQLite's write lock shared with ingestion) for {counted:,.0f} holder counts", "", "")

    def sustained(self):
        """A fixed rate for a minute through a key under rpm, tpm and a budget
        counted in Redis (a data plane of its own), with usage shipped and
        metrics kept: the added latency, the errors, the usage afterwards."""
        st, rate, seconds = self.stack, self.s.sustained_rate, self.s.sustained_seconds
        dp = st.data_plane("--redis-url", "redis://127.0.0.1:6379/7")
        st.admin("PUT", "prices/load", {"input_per_million": "1", "output_per_million": "2"})
        created = st.admin("POST", "keys", {"name": "sustained", "models": ["fast"], "budget": {"amount": "1000000000"},
                                            "limits": {"rpm": 10**9, "tpm": 10**12}})
        st.wait_model(dp, created["key"], "fast")
        d = oha(self.mock_fast, "direct", "load", rate, seconds)
        g = oha(dp.url, created["key"], "fast", rate, seconds)
        recorded = st.wait_usage(g["ok"], key_id=created["id"])
        scenario = f"11. {rate:,} req/s for {seconds} s: rpm, tpm, budget in Redis, usage, metrics"
        for name, field in [("P50", "p50"), ("P99", "p99"), ("P99.9", "p999")]:
            self.report.row(scenario, name, us(d[field]), us(g[field]), added(g[field], d[field]),
                            "< +5 ms" if name == "P99" else "")
        self.report.row(scenario, "errors; usage records", f"{d['errors']} of {d['ok'] + d['errors']:,}",
                        f"{g['errors']} of {g['ok'] + g['errors']:,}; {recorded:,} records", "", "0 errors, usage exact")
        if g["errors"] or recorded != g["ok"]:
            self.report.notes.append(f"Scenario 11: {g['errors']} errors; {recorded} usage records for {g['ok']} answers.")
        st.stop(dp)

    def ingestion(self):
        """Usage batches as fast as 8 callers can send them (tests/src/cluster_load.rs),
        to a control plane of its own on SQLite, then on PostgreSQL."""
        for database in ("SQLite", "PostgreSQL"):
            st, name = Stack(self.bin_dir), None
            try:
                url = None
                if database == "PostgreSQL":
                    name, url = postgres_database("sb_bench_")
                st.control_plane(database_url=url)
                idle = rss_kib(st.cp.pid)
                cpu_before = cpu_seconds(st.cp.pid)
                out = subprocess.run(
                    [str(self.bin_dir / "cluster-load"), "--control-plane", f"http://127.0.0.1:{st.grpc_port}",
                     "--cluster-token", CLUSTER_TOKEN, "--admin-url", f"http://127.0.0.1:{st.admin_port}",
                     "--admin-token", ADMIN_TOKEN, "--streams", "0", "--creates", "0",
                     "--usage-seconds", str(self.s.ingestion_seconds), "--usage-keys", "1000"],
                    check=True, capture_output=True, text=True, timeout=600).stdout
                result = json.loads(out)
                cpu = cpu_seconds(st.cp.pid) - cpu_before
                per_record = cpu / max(result["usage_records"], 1) * 1e6
                self.report.row(f"12. usage ingestion, one control plane on {database}", "records/s (8 callers, batches of 500)",
                                "", f"{result['usage_records_per_second']:,.0f}",
                                f"{per_record:.1f} us of control-plane CPU per record; RSS idle {idle / 1024:.0f} MiB, "
                                f"after {rss_kib(st.cp.pid) / 1024:.0f} MiB", ">= 50,000")
            finally:
                st.close()
                if name:
                    drop_postgres_database(name)

    def run(self, only):
        self.setup()
        try:
            for name in ["throughput", "latency_c1", "fixed_rate", "streaming", "memory", "streams", "cpu", "instructions",
                         "limits", "cache", "guardrails", "sustained", "propagation", "tracing"]:
                if not only or name in only:
                    print(f"== {name}", flush=True)
                    getattr(self, name)()
            if self.stack.usage_lost():
                self.report.notes.append("Usage: records were lost (see switchboard_usage_lost_total).")
        finally:
            self.stack.close()
        for name in ["ingestion", "config_scale"]:
            if not only or name in only:
                print(f"== {name}", flush=True)
                getattr(self, name)()


def otlp_sink():
    """An OTLP/gRPC trace collector on loopback that accepts and drops spans: (server, port)."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # noqa: N802 (the gRPC method's name)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


BENCH_BUDGET = '{"amount":"1000000","currency":"USD","period":"monthly","alert_threshold":0.8}'


def seed(db: Path, keys: int, routes: int):
    """Writes keys (every tenth with a budget) and routes in one transaction,
    without publishing them."""
    now = int(time.time() * 1000)
    con = sqlite3.connect(db, timeout=60)
    with con:
        con.executemany(
            "INSERT INTO routes (model, created_at, updated_at) VALUES (?, ?, ?)",
            ((f"scale-{i}", now, now) for i in range(routes)))
        con.executemany(
            "INSERT INTO route_targets (route_model, position, provider, upstream_model, weight) VALUES (?, 0, 'fast', 'load', 1)",
            ((f"scale-{i}",) for i in range(routes)))
        # The first tenth hold budgets: simulated usage goes to them.
        con.executemany(
            "INSERT INTO api_keys (id, name, key_hash, prefix, models, created_at, budget) VALUES (?, ?, ?, 'sk-sb-', '[]', ?, ?)",
            ((f"key-{i:08d}", f"bench {i}", secrets.token_hex(32), now, BENCH_BUDGET if i < keys // 10 else None)
             for i in range(keys)))
    con.close()


def restore_version(db: Path) -> float:
    """A new version that the change log does not reach back to, as after a
    restore: data planes behind it take a full snapshot. Answers the moment
    it committed."""
    con = sqlite3.connect(db, timeout=60)
    with con:
        con.execute("UPDATE config_version SET version = version + 1, history_from = version + 1 WHERE id = 1")
    con.close()
    return time.monotonic()


def raise_file_limit(settings: Settings, report: Report):
    """The data plane and the probe hold a socket per connection (the data
    plane also its upstream ones); the processes started inherit this limit.
    Raising the hard limit needs CAP_SYS_RESOURCE: without it, scenario 5
    holds as many connections as the hard limit allows, and says so."""
    # A stream holds two sockets in the data plane: the client's and the upstream's.
    wanted = max(settings.idle_connections, 2 * settings.inflight_streams) + 2_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        connections, streams = min(settings.idle_connections, hard - 2_000), min(settings.inflight_streams, (hard - 2_000) // 2)
        report.notes.append(f"The file limit could not be raised above {hard:,} (no CAP_SYS_RESOURCE): scenario 5 held "
                            f"{connections:,} connections instead of {settings.idle_connections:,}, scenario 10 "
                            f"{streams:,} streams instead of {settings.inflight_streams:,}.")
        settings.idle_connections, settings.inflight_streams = connections, streams


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "unknown CPU")
    mem = int(next(l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))) / 1048576
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}"


def write(report: Report, settings: Settings, out: Path, elapsed: float):
    lines = [
        "| scenario | measure | direct | gateway | gateway vs direct | target |",
        "|---|---|---|---|---|---|",
        *[f"| {' | '.join(str(c) for c in row)} |" for row in report.rows],
    ]
    text = out.read_text() if out.exists() else ""
    start, end = "<!-- bench:results -->", "<!-- /bench:results -->"
    block = "\n".join([
        start,
        f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} on {machine()}; {settings.seconds:.0f} s per load run; "
        f"suite ran in {elapsed / 60:.1f} min. Load generator, gateway and mocks share the machine.",
        "",
        *lines,
        "",
        *[f"- {note}" for note in report.notes],
        end,
    ])
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text + "\n" + block + "\n"
    out.write_text(text)


def main():
    # A terminated run still stops the processes it started (the `finally` blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and 1 s runs: checks the suite works, measures nothing")
    parser.add_argument("--seconds", type=float, default=None, help="length of each load run (default 8, smoke 1)")
    parser.add_argument("--bin-dir", type=Path, default=None, help="built binaries (default target/release, smoke target/debug)")
    parser.add_argument("--out", type=Path, default=None, help="report file (default docs/benchmarks.md; smoke: none)")
    parser.add_argument("--only", nargs="*", default=[], help="scenario methods to run, e.g. throughput config_scale")
    args = parser.parse_args()
    settings = Settings(args.smoke, args.seconds or (1 if args.smoke else 8))
    bin_dir = args.bin_dir or ROOT / "target" / ("debug" if args.smoke else "release")
    need("wrk", ["apt-get", "install", "-y", "-q", "wrk"])
    need("oha", ["cargo", "install", "oha", "--locked"])
    started = time.monotonic()
    report = Report()
    raise_file_limit(settings, report)
    Bench(settings, bin_dir, report).run(set(args.only))
    elapsed = time.monotonic() - started
    print(f"suite ran in {elapsed:.0f} s")
    out = args.out or (None if args.smoke else ROOT / "docs" / "benchmarks.md")
    if out:
        write(report, settings, out, elapsed)
        print(f"written to {out}")
    if any(("errors" in note or "lost" in note or "failed" in note) and "file limit" not in note for note in report.notes):
        sys.exit("the benchmark saw errors: " + " ".join(report.notes))


if __name__ == "__main__":
    main()
