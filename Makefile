# vmckpt build. `make` builds the library and the two programs; `make check`
# builds with ASan+UBSan and runs the whole test suite.
CC ?= cc
PKGS = jansson libcrypto libmicrohttpd inih libcurl libzstd liblz4
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -Ilib \
          $(shell pkg-config --cflags $(PKGS))
# --as-needed: each program records only the libraries it uses (the client, which
# only speaks HTTP, does not load librados).
LDFLAGS += -Wl,--as-needed
LDLIBS += $(shell pkg-config --libs $(PKGS)) -pthread -lm
# The RADOS store is built when librados's header is there (Debian ships no
# pkg-config file for it); RADOS=0 leaves it out, RADOS=1 insists on it.
ifndef RADOS
RADOS := $(shell printf '\043include <rados/librados.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 \
           && echo 1 || echo 0)
endif
ifeq ($(RADOS),1)
BACKEND_DEFS = -DVMCKPT_HAVE_RADOS
LDLIBS += -lrados
endif
CFLAGS += $(BACKEND_DEFS)
SAN ?=
ifeq ($(SAN),thread)
CFLAGS += -fsanitize=thread -fno-omit-frame-pointer -DVMCKPT_TEST_HOOKS
LDFLAGS += -fsanitize=thread
endif
ifeq ($(SAN),1)
CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined \
          -DVMCKPT_TEST_HOOKS
LDFLAGS += -fsanitize=address,undefined
endif
B ?= build/$(if $(filter 1,$(SAN)),san,$(if $(filter thread,$(SAN)),tsan,rel))$(if $(filter 0,$(RADOS)),-norados)

LIB_SRC = $(filter-out $(if $(filter 0,$(RADOS)),lib/store_rados.c),$(wildcard lib/*.c))
LIB_OBJ = $(LIB_SRC:lib/%.c=$(B)/lib/%.o)
TEST_SRC = $(wildcard tests/unit/test_*.c)
TEST_BIN = $(TEST_SRC:tests/unit/%.c=$(B)/tests/%)

all: $(B)/vmckptd $(B)/vmckpt $(B)/store_bench $(B)/interval_sim

$(B)/lib/%.o: lib/%.c $(wildcard lib/*.h) Makefile
	@mkdir -p $(dir $@)
	@echo "  CC $<"; $(CC) $(CFLAGS) -c -o $@ $<

$(B)/libvmckpt.a: $(LIB_OBJ)
	ar rcs $@ $^

$(B)/vmckptd: src/vmckptd.c $(B)/libvmckpt.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/vmckpt: src/vmckpt.c $(B)/libvmckpt.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/store_bench: bench/store_bench.c $(B)/libvmckpt.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/interval_sim: bench/interval_sim.c $(B)/libvmckpt.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/tests/%: tests/unit/%.c $(B)/libvmckpt.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

tests: $(TEST_BIN)

guest:
	bash guest/build.sh

# The main job on the directory store: run, checkpoint, crash, restore.
demo: all guest
	bash scripts/demo.sh $(B)

# The whole suite: unit tests then integration tests, under ASan+UBSan.
check:
	$(MAKE) SAN=1 all tests
	$(MAKE) SAN=thread all tests
	bash tests/run.sh build/san

# ThreadSanitizer: the unit tests and one integration test with agents whose
# threads race the most (uploads, leases, fences, take-overs).
tsan:
	$(MAKE) SAN=thread all tests
	bash tests/tsan.sh build/tsan

# The suite three times in a row while stress-ng loads every CPU.
check-load:
	$(MAKE) SAN=1 all tests
	bash tests/load.sh build/san

# Fuzzing (libFuzzer, clang): each harness of tests/fuzz for FUZZ_SECONDS,
# from its seed corpus, under ASan+UBSan. A crash fails the target and
# leaves its input in build/fuzz/crash-<harness>-*.
FUZZ_SECONDS ?= 30
FUZZ_CC = clang
FUZZ_FLAGS = -g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -Ilib \
             -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
             $(shell pkg-config --cflags $(PKGS)) $(BACKEND_DEFS)
FUZZ_SRC = $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN = $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_LIB_OBJ = $(LIB_SRC:lib/%.c=build/fuzz/lib/%.o)

build/fuzz/lib/%.o: lib/%.c $(wildcard lib/*.h) Makefile
	@mkdir -p $(dir $@)
	@echo "  FUZZCC $<"; $(FUZZ_CC) $(FUZZ_FLAGS) -c -o $@ $<

build/fuzz/libvmckpt.a: $(FUZZ_LIB_OBJ)
	ar rcs $@ $^

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c build/fuzz/libvmckpt.a
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

fuzz-build: $(FUZZ_BIN)

fuzz: fuzz-build
	bash tests/fuzz/run.sh $(FUZZ_SECONDS)

# The randomized fault campaign (tests/campaign.sh): CAMPAIGN_FAULTS faults
# from CAMPAIGN_SEED on three nodes; the test suite runs a short one.
CAMPAIGN_SEED ?= 1
CAMPAIGN_FAULTS ?= 100
campaign:
	$(MAKE) SAN=1 all tests guest
	BIN=build/san bash tests/campaign.sh $(CAMPAIGN_SEED) $(CAMPAIGN_FAULTS)

bench: all guest
	bash bench/stop_time.sh $(B)

# The paper's evaluation regenerated (eval/run.sh): CSVs and plots in
# eval/results, the report in eval/REPORT.md. QUICK=1: the quick form.
QUICK ?= 0
eval: all guest
	QUICK=$(QUICK) bash eval/run.sh $(B)

clean:
	rm -rf build/rel build/rel-norados build/san build/tsan build/fuzz

.PHONY: all tests guest demo check check-load fuzz fuzz-build campaign bench clean eval
