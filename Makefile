# Switchboard: the two commands are `make run` (gateway on embedded defaults)
# and `make test` (installs what the tests need, then runs every test).

CARGO  ?= cargo
PYTHON ?= python3

.PHONY: build release run test test-deps test-rust test-e2e lint fmt bench clean

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release -p control-plane -p data-plane

## Control plane + data plane on SQLite under ./.switchboard, ports 8080 (API), 8081 (admin), 50051 (gRPC).
run: release
	./deploy/local/run.sh

## Everything CI runs: unit and component tests, then end-to-end tests with the real SDKs.
test: test-deps build test-rust test-e2e

test-deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

test-rust:
	$(CARGO) test --workspace

test-e2e:
	$(PYTHON) -m pytest tests/e2e -q -p no:cacheprovider

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	./tests/bench/run.sh

clean:
	$(CARGO) clean
