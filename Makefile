# livemerge: `make` builds, `make check` runs every test, `make demo` runs the
# main job on a QEMU it starts itself. Missing Debian packages install
# themselves (as root) or are named.

VERSION    := 0.1.0
PREFIX     ?= /usr/local
CC         ?= cc
BUILD      := build
PKGS       := json-c libssh2
WARN       := -Wall -Wextra -Werror
CFLAGS     ?= -O2 -g
LM_CFLAGS   = -std=gnu11 -D_GNU_SOURCE $(WARN) $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -DLM_VERSION='"$(VERSION)"'
LM_LIBS     = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lev

LIB_SRCS   := $(wildcard common/*.c qmp/*.c transport/*.c host/*.c merge/*.c)
CLI_SRCS   := $(wildcard cli/*.c)
TEST_SRCS  := $(wildcard tests/test-*.c)
TEST_HELP  := $(filter-out $(TEST_SRCS),$(wildcard tests/*.c))
FUZZ_SRCS  := $(wildcard fuzz/fuzz-*.c)
HEADERS    := $(wildcard common/*.h qmp/*.h transport/*.h host/*.h merge/*.h)
PUB_HEADERS := $(filter-out %-int.h,$(HEADERS)) # *-int.h: a module's insides, not installed

LIB_OBJS   := $(LIB_SRCS:%.c=$(BUILD)/%.o)
CLI_OBJS   := $(CLI_SRCS:%.c=$(BUILD)/%.o)
TESTS      := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
FUZZERS    := $(FUZZ_SRCS:fuzz/%.c=$(BUILD)/fuzz/%)

FUZZ_SECONDS ?= 60

.PHONY: all deps check check-deps check-qemu10 unit asan fuzz fuzz-check integration guest demo bench install clean

all: deps
	@$(MAKE) --no-print-directory $(BUILD)/livemerge $(BUILD)/liblivemerge.a

deps:
	@scripts/deps.sh build

check-deps:
	@scripts/deps.sh check

$(BUILD)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(LM_CFLAGS) $(CFLAGS) -c -o $@ $<

# the CLI's own headers (not installed, not in HEADERS)
$(CLI_OBJS): $(wildcard cli/*.h)

$(BUILD)/liblivemerge.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/livemerge: $(CLI_OBJS) $(BUILD)/liblivemerge.a
	$(CC) $(CFLAGS) -o $@ $^ $(LM_LIBS)

$(BUILD)/tests/%: tests/%.c $(TEST_HELP) $(BUILD)/liblivemerge.a tests/*.h
	@mkdir -p $(dir $@)
	$(CC) $(LM_CFLAGS) $(CFLAGS) -o $@ $< $(TEST_HELP) $(BUILD)/liblivemerge.a $(LM_LIBS) -lcmocka

# tests that compile a cli/ source in (cli/ is not part of the library)
$(BUILD)/tests/test-escape: cli/escape.c cli/escape.h common/lm-escape.c

# unit tests (cmocka)
unit: $(BUILD)/livemerge $(TESTS)
	@scripts/run-unit.sh $(TESTS)

# unit tests under ASan + UBSan, in their own build tree
asan: check-deps
	@$(MAKE) --no-print-directory BUILD=build/asan CC=clang \
		CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" unit

# libFuzzer targets: `make fuzz` runs each longer, `make fuzz-check` for FUZZ_SECONDS.
# -fno-sanitize-recover=all: undefined behaviour aborts the input like a crash, so it is
# saved and fails the run, instead of a "runtime error" line and a pass.
$(BUILD)/fuzz/%: fuzz/%.c $(LIB_SRCS) $(HEADERS)
	@mkdir -p $(dir $@)
	clang -std=gnu11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		$(shell pkg-config --cflags $(PKGS)) \
		-o $@ $< $(LIB_SRCS) $(LM_LIBS)

fuzz-check: $(FUZZERS)
	@scripts/run-fuzz.sh $(FUZZ_SECONDS) $(FUZZERS)

fuzz: $(FUZZERS)
	@scripts/run-fuzz.sh $${FUZZ_SECONDS:-600} $(FUZZERS)

# the tiny test guest (kernel, busybox, qemu-ga, writer), built from Debian packages
GUEST := $(BUILD)/guest
$(GUEST)/initrd.img: $(wildcard integration/guest/*)
	@integration/guest/build.sh $(GUEST)

guest: $(GUEST)/initrd.img

# (check-deps: the tests need e2fsprogs, socat, jq, qemu-guest-agent ... and fail without them)
integration: check-deps
	@$(MAKE) --no-print-directory $(BUILD)/livemerge $(GUEST)/initrd.img
	@integration/run

# everything, with a closing tally
check: check-deps
	@$(MAKE) --no-print-directory $(BUILD)/livemerge $(BUILD)/liblivemerge.a
	@scripts/check.sh

# the integration tests again on QEMU 10.0 from bookworm-backports, unpacked into
# $(BUILD)/qemu10 beside the system's QEMU (scripts/qemu10.sh), with a closing tally
check-qemu10: check-deps
	@scripts/deps.sh qemu10
	@$(MAKE) --no-print-directory $(BUILD)/livemerge $(GUEST)/initrd.img
	@scripts/check-qemu10.sh $(BUILD)/qemu10

demo:
	@scripts/deps.sh demo
	@$(MAKE) --no-print-directory $(BUILD)/livemerge
	@scripts/demo.sh

# benchmarks: BENCHMARKS.md and bench/scale.png from one run (as root on Debian 12 it
# installs what it needs, libvirt included; a few minutes). Settings: see bench/run.
bench:
	@BUILD=$(BUILD) bench/run

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/include/livemerge/common $(DESTDIR)$(PREFIX)/include/livemerge/qmp \
		$(DESTDIR)$(PREFIX)/include/livemerge/transport $(DESTDIR)$(PREFIX)/include/livemerge/merge
	install -m 755 $(BUILD)/livemerge $(DESTDIR)$(PREFIX)/bin/
	install -m 644 doc/livemerge.1 $(DESTDIR)$(PREFIX)/share/man/man1/livemerge.1
	install -m 644 $(BUILD)/liblivemerge.a $(DESTDIR)$(PREFIX)/lib/
	for h in $(PUB_HEADERS); do install -m 644 $$h $(DESTDIR)$(PREFIX)/include/livemerge/$$h; done
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' livemerge.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/livemerge.pc

clean:
	rm -rf $(BUILD)
