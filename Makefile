# Switchboard: the two commands are `make run` (gateway on embedded defaults)
# and `make test` (installs what the tests need, then runs every test).

CARGO  ?= cargo
PYTHON ?= python3

.PHONY: build release run test test-deps test-rust test-e2e test-bench lint fmt bench clean

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release -p control-plane -p data-plane

## Control plane + data plane on SQLite under ./.switchboard, ports 8080 (API), 8081 (admin), 50051 (gRPC).
run: release
	./deploy/local/run.sh

## Everything CI runs: unit and component tests, end-to-end tests with the real SDKs,
## and the benchmark suite's smoke run (so it cannot rot).
test: test-deps build test-rust test-e2e test-bench

## Python packages for the e2e tests; wrk and oha for the benchmark suite.
test-deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null
	command -v oha >/dev/null || $(CARGO) install oha --locked --quiet

test-rust:
	$(CARGO) test --workspace

test-e2e:
	$(PYTHON) -m pytest tests/e2e -q -p no:cacheprovider

## Every benchmark scenario at toy sizes on the debug build: checks the suite, measures nothing.
test-bench:
	$(PYTHON) tests/bench/bench.py --smoke

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## The benchmark suite (docs/benchmarks.md): release build, ~5 minutes, writes the figures there.
bench:
	$(CARGO) build --release -p control-plane -p data-plane -p switchboard-tests
	$(PYTHON) tests/bench/bench.py

clean:
	$(CARGO) clean
