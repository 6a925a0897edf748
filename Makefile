# Switchboard: the two commands are `make run` (gateway on embedded defaults)
# and `make test` (installs what the tests need, then runs every test).

CARGO  ?= cargo
PYTHON ?= python3

.PHONY: build release run test test-deps test-rust test-e2e test-bench test-fuzz fuzz lint fmt bench clean

build:
	$(CARGO) build --workspace

## The two binaries, and the mock provider that `make run` serves as the demo upstream.
release:
	$(CARGO) build --release --bin control-plane --bin data-plane --bin switchboard --bin mock-provider

## Control plane + data plane on SQLite under ./.switchboard, with a demo upstream (offline):
## ports 8080 (API), 8081 (admin), 50051 (gRPC), 8090 (demo upstream). SWITCHBOARD_DEMO=0: no demo.
run: release
	./deploy/local/run.sh

## Everything CI runs: unit and component tests, end-to-end tests with the real SDKs,
## the benchmark suite's smoke run (so it cannot rot), and a short run of each fuzz target.
test: test-deps build test-rust test-e2e test-bench test-fuzz

## Python packages for the e2e tests (the SDKs; Helm's Go SDK and the Kubernetes
## schemas for the chart's test); etcd and nginx for the multi-node test
## (Debian's packages; their services are not started: the tests run their own);
## curl (HTTP/2 test, and the chart's `helm test` command run locally);
## promtool (Debian's prometheus: the alert rules are checked and unit-tested);
## chromium (Debian's: the console's browser test drives it through Playwright);
## wrk, oha and valgrind (instructions per request, callgrind) for the benchmark suite.
test-deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null
	command -v curl >/dev/null || apt-get install -y -q curl >/dev/null
	command -v promtool >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null
	command -v etcd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null
	command -v nginx >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >/dev/null
	command -v chromium >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
	command -v valgrind >/dev/null || apt-get install -y -q valgrind >/dev/null
	command -v oha >/dev/null || $(CARGO) install oha --locked --quiet
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked --quiet

test-rust:
	$(CARGO) test --workspace

test-e2e:
	$(PYTHON) -m pytest tests/e2e -q -p no:cacheprovider

## Every benchmark scenario at toy sizes on the debug build: checks the suite, measures nothing.
test-bench:
	$(PYTHON) tests/bench/bench.py --smoke

## A short run of every fuzz target (unoptimised build: quick to compile, still 10 s of inputs each).
test-fuzz:
	data-plane/fuzz/run.sh 10 --dev

## The longer campaign recorded in docs/security.md: FUZZ_SECONDS per target, optimised build.
FUZZ_SECONDS ?= 300
fuzz:
	data-plane/fuzz/run.sh $(FUZZ_SECONDS) -O

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## The benchmark suite (docs/benchmarks.md): release build, ~5 minutes, writes the figures there.
bench: test-deps
	$(CARGO) build --release -p control-plane -p data-plane -p switchboard-tests
	$(PYTHON) tests/bench/bench.py

clean:
	$(CARGO) clean
