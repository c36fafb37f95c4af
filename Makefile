# The broker's build. `make` builds build/broker; `make test` runs every test
# (unit, integration, and integration again on an ASan+UBSan build);
# `make run` starts a local demo. Missing Debian packages are installed by
# scripts/deps.sh first.

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

TOOLS := $(patsubst scripts/%.c,$(BUILD)/%,$(wildcard scripts/loadgen.c scripts/publish.c))

.PHONY: all deps test unit integration asan test-asan run clean
all: $(BUILD)/broker $(TOOLS)

deps:
	@scripts/deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) $(CFLAGS) -c $< -o $@

$(BUILD)/libproto.a: $(PROTO_OBJ)
	ar rcs $@ $^

$(BUILD)/libbroker.a: $(BROKER_OBJ)
	ar rcs $@ $^

$(BUILD)/broker: $(BUILD)/obj/broker/main.o $(BUILD)/libbroker.a $(BUILD)/libproto.a
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@

# Tools in scripts/ use protocol/, never broker/ internals.
$(BUILD)/%: $(BUILD)/obj/scripts/%.o $(BUILD)/libproto.a
	$(CC) $(LDFLAGS) $^ $(LIBS) -lm -o $@

$(BUILD)/test/%: $(BUILD)/obj/test/unit/%.o $(BUILD)/libbroker.a $(BUILD)/libproto.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@

unit: $(UNIT_BIN)
	@for t in $(UNIT_BIN); do echo "== $$t"; $$t || exit 1; done

integration: $(BUILD)/broker
	BROKER_BIN=$(abspath $(BUILD)/broker) timeout 900 $(PYTEST) test/integration

asan:
	$(MAKE) BUILD=build/asan SANITIZER=address all

test-asan:
	$(MAKE) BUILD=build/asan SANITIZER=address unit integration

test: deps
	$(MAKE) unit integration
	$(MAKE) test-asan

run: deps all
	scripts/run.sh

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
