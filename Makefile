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

# The test tiers (README "Tests"). Every build a tier needs is made side by
# side first (ASan+UBSan, TSan, the RADOS-less build, the fuzz harnesses);
# tests/run.sh then runs the independent parts at once (JOBS, default twice
# the CPUs) and prints each part's time and the ten slowest.
NPROC := $(shell nproc 2>/dev/null || echo 2)
JOBS ?=
RUN_J = $(if $(JOBS),-j $(JOBS))

# The whole suite, which CI runs (at most 20 minutes on 2 cores).
check: check-build
	bash tests/run.sh $(RUN_J) build/san

# After a full `make check` on a machine like CI's: its parts' seconds and
# CPU seconds become the first-run estimates in the tree (tests/part-times).
part-times:
	@test -s build/test-logs/times || { echo "no build/test-logs/times: run make check first" >&2; exit 1; }
	{ sed -n '1,3p' tests/part-times; grep -v '^#' build/test-logs/times | sort; } > tests/part-times.new
	mv tests/part-times.new tests/part-times

# The edit-build-test loop: unit tests, layering, settings and one
# integration smoke test (run, checkpoint, crash, restore). At most 3 minutes.
check-fast:
	$(MAKE) -j$(NPROC) --no-print-directory SAN=1 all tests
	bash tests/run.sh $(RUN_J) --fast build/san

check-build:
	$(MAKE) -j$(NPROC) --no-print-directory build-rel build-san build-tsan build-norados fuzz-build
build-rel:
	$(MAKE) --no-print-directory all
build-san:
	$(MAKE) --no-print-directory SAN=1 all tests
build-tsan:
	$(MAKE) --no-print-directory SAN=thread all tests
build-norados:
	$(MAKE) --no-print-directory RADOS=0 all

# What does not fit in CI's time, run before a release (hours; not in CI):
# the 100-fault campaign, the 1000-checkpoint soak, the full evaluation,
# every fuzzer for 10 minutes, and the suite three times under CPU load.
check-long: check-build
	$(MAKE) --no-print-directory campaign CAMPAIGN_FAULTS=100
	$(MAKE) --no-print-directory soak
	$(MAKE) --no-print-directory eval
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=600
	$(MAKE) --no-print-directory check-load

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

# The 1000-checkpoint soak (bench/soak.sh; t_soak is its short form).
soak: all guest
	bash bench/soak.sh $(B)

# The paper's evaluation regenerated (eval/run.sh): CSVs and plots in
# eval/results, the report in eval/REPORT.md. QUICK=1: the quick form.
QUICK ?= 0
eval: all guest
	QUICK=$(QUICK) bash eval/run.sh $(B)

clean:
	rm -rf build/rel build/rel-norados build/san build/tsan build/fuzz

.PHONY: all tests guest demo check check-fast part-times check-build build-rel build-san build-tsan build-norados \
        check-long check-load soak fuzz fuzz-build campaign bench clean eval
