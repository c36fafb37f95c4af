# The broker's build. `make` builds build/broker; `make test` runs every test
# (unit, integration, and integration again on an ASan+UBSan build);
# `make run` starts a local demo. Missing Debian packages are installed by
# scripts/deps.sh first.
#
# build/ holds only what this Makefile makes (objects, their .d files, the
# binaries and a record of the flags they were built with); what the demo,
# the stack and the benchmarks leave behind (pid files, sockets, logs, nginx
# state) lives in var/, so that `make clean` never removes a running stack's
# files and nothing there can break a build.

CC      ?= cc
BUILD   ?= build
CFLAGS  ?= -O2 -g
WARN    := -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wpointer-arith
CPPFLAGS += -D_GNU_SOURCE -I. -MMD -MP
LIBS    := -levent -lhiredis -lwslay -ljansson -lcrypto

# SANITIZER=address builds with ASan and UBSan (the `asan` target does it in
# build/asan).
ifeq ($(SANITIZER),address)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

PROTO_SRC  := $(wildcard protocol/*.c)
BROKER_SRC := $(filter-out broker/main.c,$(wildcard broker/*.c))
UNIT_SRC   := $(wildcard test/unit/test_*.c)

PROTO_OBJ  := $(PROTO_SRC:%.c=$(BUILD)/obj/%.o)
BROKER_OBJ := $(BROKER_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_BIN   := $(UNIT_SRC:test/unit/%.c=$(BUILD)/test/%)

PYTEST := /usr/bin/python3 -m pytest -q -p no:cacheprovider

# Every object depends on the record of the flags it was built with (as
# Redis's .make-settings): changing CC, CFLAGS or SANITIZER rebuilds
# everything instead of mixing objects of two builds in one directory.
SETTINGS     := $(CC) $(CPPFLAGS) $(WARN) $(CFLAGS) | $(LDFLAGS) | $(LIBS)
SETTINGS_LOG := $(BUILD)/.make-settings
$(shell mkdir -p $(BUILD) && { echo '$(SETTINGS)' | cmp -s - $(SETTINGS_LOG) || \
	echo '$(SETTINGS)' > $(SETTINGS_LOG); })

# Keep object files make would otherwise see as intermediates (the tools').
.SECONDARY:

TOOLS := $(patsubst scripts/%.c,$(BUILD)/%,$(wildcard scripts/loadgen.c scripts/publish.c))

# libFuzzer harnesses (test/fuzz/), built with clang against the same
# sources; `make fuzz` runs each for FUZZ_TIME seconds from the seed corpus.
FUZZ_TIME ?= 60
FUZZ_DIR  := $(BUILD)/fuzz
FUZZERS   := $(patsubst test/fuzz/%.c,$(FUZZ_DIR)/%,$(wildcard test/fuzz/fuzz_*.c))
FUZZ_SAN  := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_LIBS := $(FUZZ_DIR)/lib/libbroker.a $(FUZZ_DIR)/lib/libproto.a

.PHONY: FORCE all deps test unit integration asan test-asan test-valgrind run clean fuzz fuzz-build fuzz-libs stack stack-stop e2e bench bench-compare bench-stack
all: $(BUILD)/broker $(TOOLS)

deps:
	@scripts/deps.sh

$(BUILD)/obj/%.o: %.c $(SETTINGS_LOG)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) $(CFLAGS) -c $< -o $@

$(BUILD)/libproto.a: $(PROTO_OBJ)
	rm -f $@; ar rcs $@ $^

$(BUILD)/libbroker.a: $(BROKER_OBJ)
	rm -f $@; ar rcs $@ $^

$(BUILD)/broker: $(BUILD)/obj/broker/main.o $(BUILD)/libbroker.a $(BUILD)/libproto.a
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@

# Tools in scripts/ use protocol/, never broker/ internals. loadgen speaks
# TLS (wss://, OpenSSL's libssl); the broker leaves TLS to nginx.
$(BUILD)/loadgen: TOOL_LIBS := -lssl
$(BUILD)/%: $(BUILD)/obj/scripts/%.o $(BUILD)/libproto.a
	$(CC) $(LDFLAGS) $^ $(TOOL_LIBS) $(LIBS) -lm -o $@

$(BUILD)/test/%: $(BUILD)/obj/test/unit/%.o $(BUILD)/libbroker.a $(BUILD)/libproto.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@

unit: $(UNIT_BIN)
	@for t in $(UNIT_BIN); do echo "== $$t"; $$t || exit 1; done

integration: $(BUILD)/broker $(TOOLS)
	BROKER_BIN=$(abspath $(BUILD)/broker) timeout 900 $(PYTEST) test/integration

# The integration suite with every broker process under valgrind (memcheck):
# any error or definite leak in the master or a worker fails the test.
VALGRIND := valgrind --quiet --error-exitcode=99 --leak-check=full \
	--errors-for-leak-kinds=definite --show-leak-kinds=definite --track-fds=no
test-valgrind: $(BUILD)/broker
	BROKER_BIN=$(abspath $(BUILD)/broker) BROKER_WRAPPER="$(VALGRIND)" timeout 1800 \
		$(PYTEST) $(VALGRIND_TESTS)
VALGRIND_TESTS ?= test/integration

asan:
	$(MAKE) BUILD=build/asan SANITIZER=address all

test-asan:
	$(MAKE) BUILD=build/asan SANITIZER=address unit integration

# Everything: unit, integration and end-to-end (browser) tests, again under
# ASan+UBSan and under valgrind, and every fuzzer for a short while.
test: deps
	$(MAKE) unit integration e2e
	$(MAKE) test-asan
	$(MAKE) test-valgrind
	$(MAKE) fuzz FUZZ_TIME=20

run: deps all
	scripts/run.sh

# Benchmarks (BENCHMARKS.md), never part of `make test`. `make bench`: the broker
# against the floor (scripts/bench/peers/floor.c); `make bench-compare`: also the
# Node.js (ws, socket.io) and nginx+nchan peers. Options go in BENCH_ARGS, e.g.
# make bench BENCH_ARGS="--quick --scenarios fanout".
BENCH_ARGS ?=
bench: all
	@scripts/deps.sh gnuplot-nox
	/usr/bin/python3 scripts/bench/run.py $(BENCH_ARGS)

bench-compare: all
	@scripts/deps.sh gnuplot-nox nginx libnginx-mod-nchan nodejs
	/usr/bin/python3 scripts/bench/run.py --compare $(BENCH_ARGS)

# The whole stack through nginx with TLS: ours over Unix sockets and over
# TCP, and nginx + nchan terminating TLS, then 100,000 wss connections.
bench-stack: all
	@scripts/deps.sh gnuplot-nox nginx libnginx-mod-nchan nodejs
	/usr/bin/python3 scripts/bench/run.py --stack --out scripts/bench/results-stack $(BENCH_ARGS)

# The production topology on loopback (scripts/stack.sh): redis-server, the
# broker and nginx terminating TLS with docker/nginx.conf. Prints the wss://,
# https:// (demo page) and redis:// URLs; `make stack-stop` stops it.
stack: deps all
	scripts/stack.sh start

stack-stop:
	scripts/stack.sh stop

# End-to-end tests (test/e2e, node --test): the stack with headless Debian
# Chromium through nginx TLS, and protocol/broker-client.js against a real
# broker. npm ci installs playwright-core and ws from the lock (no browser
# download); node >= 20.
e2e: $(BUILD)/broker
	@scripts/deps.sh chromium
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' || \
		{ echo "e2e: needs node >= 20 (Debian 12's nodejs is 18)" >&2; exit 1; }
	@test -d test/e2e/node_modules || (cd test/e2e && npm ci --no-audit --no-fund)
	cd test/e2e && BROKER_BIN=$(abspath $(BUILD)/broker) timeout 600 node --test

# The libraries are remade by a make of their own (clang, other flags, their
# own directory); a fuzzer is relinked only when one of them changed.
$(FUZZ_LIBS): FORCE
	$(MAKE) --no-print-directory BUILD=$(FUZZ_DIR)/lib CC=clang \
		CFLAGS="-g -O1 -fsanitize=fuzzer-no-link $(FUZZ_SAN)" $@

fuzz-libs: $(FUZZ_LIBS)

$(FUZZ_DIR)/fuzz_%: test/fuzz/fuzz_%.c $(FUZZ_LIBS)
	clang -D_GNU_SOURCE -I. $(WARN) -g -O1 -fsanitize=fuzzer $(FUZZ_SAN) $< \
		$(FUZZ_LIBS) $(LIBS) -o $@

fuzz-build: $(FUZZERS)

fuzz: fuzz-build
	@for f in $(FUZZERS); do \
		n=$${f#$(FUZZ_DIR)/fuzz_}; mkdir -p $(FUZZ_DIR)/corpus/$$n $(FUZZ_DIR)/crashes; \
		echo "== $$f for $(FUZZ_TIME) s"; \
		$$f -max_total_time=$(FUZZ_TIME) -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
			-print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/crashes/$$n- \
			$(FUZZ_DIR)/corpus/$$n test/fuzz/corpus/$$n 2>&1 | \
			grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::new_units_added|==[0-9]+==ERROR|SUMMARY|artifact_prefix)" ; \
		test $${PIPESTATUS:-0} = 0 || exit 1; \
		ls $(FUZZ_DIR)/crashes/$$n-* >/dev/null 2>&1 && { echo "$$f: crash, see $(FUZZ_DIR)/crashes"; exit 1; }; \
	done; true

clean:
	rm -rf $(BUILD)

# Exactly the dependency files of the objects this build makes.
-include $(wildcard $(PROTO_OBJ:.o=.d) $(BROKER_OBJ:.o=.d) $(BUILD)/obj/broker/main.d \
	$(UNIT_SRC:test/unit/%.c=$(BUILD)/obj/test/unit/%.d) $(TOOLS:$(BUILD)/%=$(BUILD)/obj/scripts/%.d))
