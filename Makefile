# kvconnectd — see README.md. `make run` and `make test` work on a fresh clone.
SWIFT ?= swift
PREFIX ?= /usr/local
DESTDIR ?=
PORT ?= 4512
DATA ?= ./data/kv.sqlite3

.PHONY: format lint all deps test-deps bench-deps build release run test unit-test e2e-test bench bench-profile bench-micro crash-test soak watch-scale install uninstall proto clean fuzz fuzz-short test-asan test-tsan bench-queue fault-test

all: build

deps:
	@bash scripts/install-deps.sh

test-deps:
	@bash scripts/install-deps.sh --test

bench-deps:
	@bash scripts/install-deps.sh --bench

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product kvconnectd

# Starts the daemon on the embedded SQLite default with a development token.
run: release
	@bash scripts/run-dev.sh "$(DATA)" "$(PORT)"

# Unit tests (XCTest; the protocol layer's again on the in-memory storage), a
# short run of every fuzz target, then the end-to-end
# suite with real clients (its "N passed" line closes the run).
# The unit tests get a throwaway PostgreSQL cluster (scripts/pg-test-cluster.sh,
# stopped again also on failure); the engine suite runs a second time on it.
test: test-deps
	$(SWIFT) build --build-tests
	@pgdir=$$(mktemp -d /tmp/kvconnectd-pg.XXXXXX) && \
	trap 'bash scripts/pg-test-cluster.sh stop '"$$pgdir" EXIT && \
	pgurl=$$(bash scripts/pg-test-cluster.sh start $$pgdir) && \
	KVCONNECTD_TEST_PG_URL=$$pgurl KVCONNECTD_TEST_PG_DIR=$$pgdir \
		$(SWIFT) test --skip-build --disable-swift-testing && \
	KVCONNECTD_TEST_BACKEND=postgres KVCONNECTD_TEST_PG_URL=$$pgurl \
		$(SWIFT) test --skip-build --disable-swift-testing --filter KVEngineTests
	KVCONNECT_TEST_BACKEND=memory $(SWIFT) test --skip-build --disable-swift-testing --filter KVConnectTests
	FUZZ_SECONDS=$${FUZZ_SHORT_SECONDS:-10} bash Tests/Fuzz/run.sh
	$(SWIFT) build --product kvconnectd
	bash Tests/e2e/run.sh .build/debug/kvconnectd

unit-test: deps
	$(SWIFT) test --disable-swift-testing

e2e-test: test-deps build
	bash Tests/e2e/run.sh .build/debug/kvconnectd

# libFuzzer targets (Tests/Fuzz), built into .build-fuzz; FUZZ_SECONDS each.
FUZZ_SECONDS ?= 600
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash Tests/Fuzz/run.sh

fuzz-short: deps
	FUZZ_SECONDS=20 bash Tests/Fuzz/run.sh

# The unit tests under AddressSanitizer / ThreadSanitizer (own build dirs).
# Leak checking at exit is off (detect_leaks=0): every "direct" leak LSan
# reports there is a Swift weak-reference side table, whose pointer the
# runtime keeps encoded in the object's refcount word where LSan cannot see
# it, and the "indirect" ones hang off those (stores of test fixtures whose
# threads still run at exit). Real leaks are caught by the fuzzers, which
# run with LSan on per input (that found the engine's thread cycles), and by
# KVEngineTests/FuzzRegressionTests.testClosedStoreIsFreed.
test-asan: deps
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan
	ASAN_OPTIONS=detect_leaks=0 $(SWIFT) test --skip-build --disable-swift-testing --sanitize=address --scratch-path .build-asan

test-tsan: deps
	$(SWIFT) build --build-tests --sanitize=thread --scratch-path .build-tsan
	$(SWIFT) test --skip-build --disable-swift-testing --sanitize=thread --scratch-path .build-tsan

BINDIR ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR ?= /lib/systemd/system
MANDIR ?= $(PREFIX)/share/man/man1
DOCDIR ?= $(PREFIX)/share/doc/kvconnectd
BIN ?= .build/release/kvconnectd

# Installs binary, hardened unit, example config, man page and docs under
# $(DESTDIR); an existing config is kept. `make install BIN=...` skips the build.
install: $(if $(filter .build/release/kvconnectd,$(BIN)),release)
	bash scripts/install.sh install "$(BIN)" "$(DESTDIR)" "$(BINDIR)" "$(SYSCONFDIR)" "$(UNITDIR)" "$(MANDIR)" "$(DOCDIR)"

uninstall:
	bash scripts/install.sh uninstall "$(BIN)" "$(DESTDIR)" "$(BINDIR)" "$(SYSCONFDIR)" "$(UNITDIR)" "$(MANDIR)" "$(DOCDIR)"

# Long crash test: 20 SIGKILLs at random moments under concurrent writers.
crash-test: test-deps build
	CRASH_KILLS=$${CRASH_KILLS:-20} bash Tests/e2e/run.sh .build/debug/kvconnectd -k "sigkill or sigterm" -s

# High availability, long fault: PostgreSQL stopped for 30 s under load (the
# other HA and fault tests, test_ha*.py, run in `make test`); docs/ha.md.
fault-test: test-deps build
	KVCONNECTD_FAULT_TESTS=1 bash Tests/e2e/run.sh .build/debug/kvconnectd -k "test_ha and not haproxy_h2c" -s

# 10-minute bank-transfer soak with RSS and fd samples every 10 s.
soak: test-deps build
	BANK_SECONDS=$${BANK_SECONDS:-600} SAMPLE_SECONDS=10 bash Tests/e2e/run.sh .build/debug/kvconnectd -k bank -s

# Watch streams at full size on the release build (issue 16): 10,000 and
# 50,000 watches on one Deno.Kv handle (RSS per 1,000 streams, every stream
# live, the handle still serves), then 10,000 watchers of one key over 4 Deno
# processes (commit -> frame latency). Prints a section for docs/benchmarks.md.
# LARGE, SMALL, FANOUT, PROCS, ROUNDS overridable (see bench/watch_scale.py).
watch-scale: test-deps release
	.venv/bin/python bench/watch_scale.py

# Benchmarks against the release build with Redis, Deno local KV and the Deno
# CLI as peers in the same run; writes docs/benchmarks.md. CONNECTIONS,
# DURATION, SCALE_KEYS, ... overridable (see bench/run.sh).
bench: bench-deps release
	BENCH_CMD="make bench$(if $(CONNECTIONS), CONNECTIONS=$(CONNECTIONS))$(if $(DURATION), DURATION=$(DURATION))$(if $(SCALE_KEYS), SCALE_KEYS=$(SCALE_KEYS))" bash bench/run.sh

# Just the queue section of `make bench` (webhook push, pull through the Deno
# module, deadline → delivery, Deno's own queue): replaces the queue table of
# docs/benchmarks.md's latest report. QUEUE_MESSAGES (20000) overridable.
bench-queue: bench-deps release
	ONLY=queue BENCH_CMD="make bench-queue" bash bench/run.sh

# perf profile of the release daemon under wrk (read, write) and h2load (read).
bench-profile: bench-deps release
	bash bench/profile.sh

# Engine and codec micro-benchmarks (ordo-one/benchmark, release build) from
# the nested package in Benchmarks/, which the daemon and `make test` never
# build. BENCH_ARGS goes to `swift package benchmark`: "baseline update NAME",
# "baseline compare NAME", "--filter REGEX", ... (see docs/benchmarks.md).
bench-micro: deps
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark $(BENCH_ARGS)

# Regenerates the committed protobuf-c code from proto/datapath.proto.
proto:
	@command -v protoc-c >/dev/null || (apt-get install -y -qq protobuf-c-compiler)
	cd proto && protoc-c --c_out=../Sources/CDatapath datapath.proto
	mv Sources/CDatapath/datapath.pb-c.h Sources/CDatapath/include/

# swift-format (ships with the toolchain) with the committed .swift-format.
SWIFT_SOURCES = Sources Tests Benchmarks/Sources Benchmarks/Benchmarks Benchmarks/Package.swift Package.swift
format:
	$(SWIFT) format -i -r --parallel $(SWIFT_SOURCES)

# Format check plus the generated-code drift check; .ci/run runs it before make test.
lint: test-deps
	$(SWIFT) format lint -r --strict --parallel $(SWIFT_SOURCES)
	bash scripts/check-generated.sh

# Every scratch directory: SwiftPM builds (main, fuzz, sanitizers, benchmarks) and bench output.
clean:
	rm -rf .build .build-* .build_* Benchmarks/.build .bench-* .benchmarkBaselines

# Rewrites docs/settings.md from the settings table (Sources/kvconnectd/SettingKey.swift);
# a unit test (kvconnectdTests) fails while the two differ.
.PHONY: settings-doc
settings-doc: deps
	$(SWIFT) build --build-tests
	KVCONNECTD_WRITE_SETTINGS_DOC=1 $(SWIFT) test --skip-build --disable-swift-testing --filter testSettingsDocIsGeneratedFromTheTable
