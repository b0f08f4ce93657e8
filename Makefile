# dmsandbox — build, test, demo, bench.
#
# `make demo` and `make test` install their own Debian dependencies (root,
# apt-get) so that they work on a fresh Debian 12 machine.

GO       ?= go
TAGS     ?= seccomp
BIN      := bin/dmsandbox
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
# Debian packages the build and the tests need.
DEB_PKGS := gcc libseccomp-dev pkg-config qemu-system-x86 qemu-system-xen busybox-static cpio kmod \
            libxen-dev shellcheck
GOFILES  := $(shell find . -name '*.go' -not -path './bin/*' 2>/dev/null)

.PHONY: all build deps test test-unit test-integration demo bench fuzz lint clean

all: build

build: $(BIN) shim

$(BIN): $(GOFILES) go.mod go.sum
	CGO_ENABLED=1 $(GO) build -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $@ ./cmd/dmsandbox

# deps installs the Debian packages, only those missing (apt-get is slow).
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# test is the README's test command: every unit test, the integration tests
# (real QEMU, cgroups, seccomp; root), vet and gofmt.
test: deps build lint build-xen
	CGO_ENABLED=1 $(GO) test -tags '$(TAGS)' -count=1 -timeout 40m ./...
	$(MAKE) test-xen

test-unit: build
	CGO_ENABLED=1 $(GO) test -tags '$(TAGS)' -short -count=1 ./...

lint:
	@fmt=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$fmt" ]; then echo "gofmt needed:"; echo "$$fmt"; exit 1; fi
	CGO_ENABLED=1 $(GO) vet -tags '$(TAGS)' ./...
	CGO_ENABLED=1 $(GO) tool staticcheck -tags '$(TAGS)' ./...

# demo launches a real QEMU confined with the built-in default configuration.
demo: deps build
	./$(BIN) demo

bench: deps build
	./$(BIN) bench

clean:
	rm -rf bin

# --- integration (rigs) ---
# Nested L1 VM rigs (integration/rig): Debian kernel + emulated VT-d under TCG.
# Knobs: DMSANDBOX_RIG_CACHE (default /var/cache/dmsandbox-rig), RIG_RUN (test regexp).
RIG_RUN ?= Rig
.PHONY: test-rig
test-rig: deps build
	CGO_ENABLED=1 $(GO) test -tags '$(TAGS)' -count=1 -v -timeout 20m -run '$(RIG_RUN)' ./integration/...
# rig-capture regenerates pci/testdata/sysfs/rig-* from QEMU-emulated devices in L1.
.PHONY: rig-capture
rig-capture: deps
	CGO_ENABLED=1 $(GO) run -tags '$(TAGS)' ./integration/cmd/rigcapture -out pci/testdata/sysfs

# --- broker ---
# bench-broker: broker round trip vs a raw unix-socket round trip in the same
# run, and durable-audit throughput / ops per fsync at 1, 4, 16 sessions.
# build-xen: the xen backend (cgo against libxen-dev) must compile and link.
# fuzz-broker: each broker/audit fuzz target for FUZZTIME (default 10m).
FUZZTIME ?= 10m
.PHONY: bench-broker build-xen fuzz-broker
bench-broker: deps build
	./$(BIN) broker bench --sysfs-root pci/testdata/sysfs/q35-vfio-rig
build-xen: deps
	CGO_ENABLED=1 $(GO) build -tags '$(TAGS) xen' ./...
	CGO_ENABLED=1 $(GO) build -tags '$(TAGS) xen' -o bin/dmsandbox-xen ./cmd/dmsandbox
	CGO_ENABLED=1 $(GO) test -tags '$(TAGS) xen' -count=1 ./pci/backend/xen/
fuzz-broker:
	CGO_ENABLED=1 $(GO) test -tags '$(TAGS)' -run XXX -fuzz '^FuzzDecodeRequest$$' -fuzztime $(FUZZTIME) ./pci/broker/
	CGO_ENABLED=1 $(GO) test -tags '$(TAGS)' -run XXX -fuzz '^FuzzSessionOps$$' -fuzztime $(FUZZTIME) ./pci/broker/
	CGO_ENABLED=1 $(GO) test -tags '$(TAGS)' -run XXX -fuzz '^FuzzParseAuthz$$' -fuzztime $(FUZZTIME) ./pci/broker/

# --- pci ---
# fuzz-pci runs each fuzz target of package pci for PCI_FUZZTIME.
PCI_FUZZTIME ?= 60s
.PHONY: fuzz-pci
fuzz-pci:
	for f in FuzzParseCapabilities FuzzParseResource FuzzParseBDF; do \
		CGO_ENABLED=1 $(GO) test -tags '$(TAGS)' -run '^$$' -fuzz "^$$f$$" -fuzztime $(PCI_FUZZTIME) -parallel 1 ./pci/ || exit 1; \
	done

# --- seccomp ---
# bench-seccomp: per-syscall cost of every compiled profile (runc's layout and
# libseccomp's linear chain) against no filter and a one-instruction filter,
# all alternated in re-executed children of one run (BENCHMARKS.md, seccomp).
# fuzz-seccomp: each seccomp fuzz target for SECCOMP_FUZZTIME.
# seccomp-propose: turns this machine's kernel log (dmesg) into proposed rules
# (docs/seccomp.md, discovery workflow).
SECCOMP_FUZZTIME ?= 60s
.PHONY: bench-seccomp fuzz-seccomp seccomp-propose
bench-seccomp: deps build
	./$(BIN) seccomp bench
fuzz-seccomp:
	for f in FuzzParseProfile FuzzParseAuditLine FuzzEvaluate; do \
		CGO_ENABLED=1 $(GO) test -tags '$(TAGS)' -run '^$$' -fuzz "^$$f$$" -fuzztime $(SECCOMP_FUZZTIME) -parallel 1 ./seccomp/ || exit 1; \
	done
seccomp-propose: build
	dmesg | ./$(BIN) seccomp propose

# --- libxl drop-in (DM mode) ---
# test-xen: the nested Xen rig (integration/xenrig): Xen 4.17 debs unpacked,
# dom0 under TCG, `xl create`/`xl destroy` of HVM guests whose
# device_model_override is dmsandbox (plain and dm_restrict=1). Opt-in (two
# TCG boots at most, ~1 min each here); takes the rig's run lock.
# fuzz-dm: the argv parser, the QMP proxy's framing, commands and what QEMU sends, FUZZTIME each.
.PHONY: test-xen fuzz-dm
test-xen: deps build build-xen
	DMSANDBOX_XEN_RIG=1 DMSANDBOX_BIN=$(CURDIR)/bin/dmsandbox-xen CGO_ENABLED=1 $(GO) test -tags '$(TAGS)' -count=1 -v -timeout 15m -run TestXenRig ./integration/xenrig/
fuzz-dm:
	for f in FuzzParse FuzzOpts; do CGO_ENABLED=1 $(GO) test -tags '$(TAGS)' -run XXX -fuzz $$f -fuzztime $(FUZZTIME) ./launcher/dmargv/ || exit 1; done
	for f in FuzzFrame FuzzCommand FuzzFromQEMU; do CGO_ENABLED=1 $(GO) test -tags '$(TAGS)' -run XXX -fuzz $$f -fuzztime $(FUZZTIME) ./launcher/qmpproxy/ || exit 1; done

# --- shim ---
# shim: the libxenctrl passthrough shim preloaded into the Xen QEMU
# (pci/broker/shim/README.md); needs gcc and libxen-dev's xenctrl.h.
# TestShim (pci/broker/shim_test.go) builds it with the same flags.
SHIM := bin/libdmsb-shim.so
.PHONY: shim
shim: $(SHIM)
$(SHIM): pci/broker/shim/dmsb_shim.c pci/broker/shim/dmsb_shim_files.c pci/broker/shim/shim.h pci/broker/c/dmsb.h
	@mkdir -p bin
	gcc -shared -fPIC -O2 -Wall -Wextra -Werror -fvisibility=hidden -Ipci/broker/c -o $@ pci/broker/shim/dmsb_shim.c pci/broker/shim/dmsb_shim_files.c -lpthread -ldl
