"""The README's offline quickstart, run as written: `deploy/local/run.sh`
(what `make run` runs after building; here with the binaries the suite
built), then every code block the README marks `<!-- readme-test: sh -->` or
`<!-- readme-test: python -->`, in order, from the folder it says to run
them in. Only the ports are changed (free ones instead of 8080, 8081, 50051,
8090), so the README cannot drift from the product without this failing."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx

from conftest import BIN_DIR, OUTPUTS, ROOT, free_port, secret, wait_until

BLOCK = re.compile(r"<!-- readme-test: (sh|python) -->\n```(?:sh|python)\n(.*?)```", re.S)


def blocks():
    return BLOCK.findall((ROOT / "README.md").read_text())


def test_the_readme_quickstart_runs_as_written(tmp_path):
    found = blocks()
    assert len(found) >= 4, "the README's quickstart blocks are marked for this test"
    ports = {8080: free_port(), 8081: free_port(), 50051: free_port(), 8090: free_port()}
    home = tmp_path / ".switchboard"
    env = {
        **os.environ,
        "SWITCHBOARD_BIN_DIR": str(BIN_DIR),
        "SWITCHBOARD_HOME": str(home),
        "SWITCHBOARD_LISTEN": f"127.0.0.1:{ports[8080]}",
        "SWITCHBOARD_HTTP_ADDR": f"127.0.0.1:{ports[8081]}",
        "SWITCHBOARD_GRPC_ADDR": f"127.0.0.1:{ports[50051]}",
        "SWITCHBOARD_DEMO_ADDR": f"127.0.0.1:{ports[8090]}",
        "SWITCHBOARD_LOG": "info",
    }
    log = tmp_path / "run.log"
    OUTPUTS.append(log)
    started = time.monotonic()
    run = subprocess.Popen([str(ROOT / "deploy" / "local" / "run.sh")], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=log.open("wb"), text=True)
    banner = []
    ready = threading.Event()

    def read():
        for line in run.stdout:
            banner.append(line)
            if line.startswith("Ctrl-C stops it"):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(90), "run.sh did not print its banner:\n" + "".join(banner) + log.read_text()
        for name in ("admin-token", "cluster-token", "demo-key"):
            secret((home / name).read_text().strip())
        key = (home / "demo-key").read_text().strip()
        text = "".join(banner)
        assert key in text and f"localhost:{ports[8080]}/v1" in text, text

        def shipped():
            answer = httpx.get(f"http://127.0.0.1:{ports[8081]}/api/v1/usage", params={"model": "gpt-4o-mini"},
                               headers={"authorization": f"Bearer {(home / 'admin-token').read_text().strip()}"})
            return answer.json()["requests"] == 4

        outputs = []
        for kind, code in found:
            for usual, port in ports.items():
                code = code.replace(f"localhost:{usual}", f"localhost:{port}")
            if "/api/v1/usage" in code:
                # Usage leaves the data plane in batches: the four requests above, once shipped.
                wait_until(shipped, what="usage shipped")
            command = ["bash", "-euo", "pipefail", "-c", code] if kind == "sh" else [sys.executable, "-c", code]
            # The CLI as `make run` built it.
            path = f"{BIN_DIR}{os.pathsep}{os.environ['PATH']}"
            done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                                  env={**os.environ, "PATH": path})
            assert done.returncode == 0, f"{kind} block failed:\n{code}\n{done.stdout}\n{done.stderr}"
            outputs.append(done.stdout)
        first_answer = time.monotonic() - started

        chat, sdk, anthropic, usage, swap, as_code = outputs[:6]
        assert json.loads(chat)["choices"][0]["message"]["content"] == "Echo: Hello"
        assert sdk.splitlines()[0] == "Echo: Hello" and "Echo: Stream, please" in sdk
        assert anthropic.strip() == "Echo: Hello"
        assert json.loads(usage)["requests"] == 4
        swapped = json.loads(swap)
        assert (swapped["name"], swapped["kind"], swapped["base_url"]) == ("demo", "openai", "https://api.openai.com/v1")
        plan = as_code.split("Applied")[0]
        assert "~ route gpt-4o-mini\n    retry: (none) -> " in plan and "+ team research" in plan, as_code
        assert "Applied 2 change(s)." in as_code and "key: sk-sb-" in as_code and "gpt-4o-mini" in as_code
        secret(as_code.split("key: ")[1].split()[0])
        print(f"README quickstart: start to the first answers in {first_answer:.1f} s (binaries built)")
    finally:
        run.send_signal(signal.SIGTERM)
        try:
            status = run.wait(30)
        except subprocess.TimeoutExpired:
            run.kill()
            raise
    assert status == 0, f"run.sh exited {status} after SIGTERM:\n{log.read_text()[-3000:]}"
