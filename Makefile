# The two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
.PHONY: run test soak bench fuzz setup build release check

CONFIG ?= config/tandem.yaml

## Install/start MariaDB and PostgreSQL if needed, build, and run Tandem on the demo config.
run: setup release
	./target/release/tandem check-config --config $(CONFIG)
	./target/release/tandem serve --config $(CONFIG)

## Everything the tests need, then the whole test suite (unit + wire tests against real MariaDB).
test: setup
	@mkdir -p target; status=0; \
	set -o pipefail; cargo test --all-targets 2>&1 | tee target/test-output.log || status=$$?; \
	awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f }' target/test-output.log; \
	exit $$status

## The randomized mirror test, long: 8 sessions x 3000 transactions, 12 kills and cuts
## (SOAK_SEED=<n> replays a seed's choices; the test prints the seed it used).
soak: setup
	TANDEM_SOAK_TXNS=$${SOAK_TXNS:-3000} TANDEM_SOAK_ROUNDS=$${SOAK_ROUNDS:-12} \
	  $${SOAK_SEED:+TANDEM_SOAK_SEED=$$SOAK_SEED} \
	  cargo test --test it soak:: -- --nocapture

## sysbench through Tandem vs an L4 relay vs direct, in one run, then a 4-shard
## cluster vs one database, then cross-shard transfers, then MySQL -> PostgreSQL
## backfill and verify vs a text pipe, then the writes staged, carried or replayed
## (see scripts/bench.sh, shard-bench.sh, xa-bench.sh, pg-bench.sh and
## carry-bench.sh for knobs).
bench: setup release
	./scripts/bench.sh
	./scripts/shard-bench.sh
	./scripts/xa-bench.sh
	./scripts/pg-bench.sh
	./scripts/carry-bench.sh

## Coverage-guided fuzzing of every parser fed by a socket or a file (nightly + cargo-fuzz):
## each target in fuzz/ for FUZZ_SECONDS (default 60); inputs that add coverage join
## fuzz/corpus/<target>/ (commit them: `make test` replays the corpus on stable).
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	for t in client_command backend_response journal_record config_text; do \
	  cargo +nightly fuzz run -O $$t fuzz/corpus/$$t -- -max_total_time=$${FUZZ_SECONDS:-60} -max_len=4096 || exit 1; \
	done

## Formatting and lints, as CI expects them.
check:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

setup:
	./scripts/setup.sh

build:
	cargo build

release:
	cargo build --release
