# Two commands matter: `make test` runs every test, `make demo` runs the main
# job. Both build the local API server first when it is not there yet.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go

BIN := $(CURDIR)/bin
ETCD_VERSION := v3.6.16

# The Kubernetes releases the library supports, newest first (README,
# "Supported Kubernetes versions"). Each kube-apiserver is built from
# hack/tools/kube-apiserver: the newest with its go.mod, each older one with
# its go.VERSION.mod. KUBE_VERSION picks the one `make demo`, `make bench`
# and `make torture` run against, and the one `make test` runs every test
# against; `make test` then runs the tests that start an API server against
# each other version too.
KUBE_TOOLS := hack/tools/kube-apiserver
KUBE_NEWEST := $(shell awk '$$1 == "k8s.io/kubernetes" { print $$2 }' $(KUBE_TOOLS)/go.mod)
KUBE_OLDER := $(patsubst $(KUBE_TOOLS)/go.%.mod,%,$(wildcard $(KUBE_TOOLS)/go.v*.mod))
KUBE_VERSIONS := $(KUBE_NEWEST) $(KUBE_OLDER)
KUBE_VERSION ?= $(KUBE_NEWEST)
ifeq ($(filter $(KUBE_VERSION),$(KUBE_VERSIONS)),)
$(error KUBE_VERSION=$(KUBE_VERSION) is not one of the supported releases: $(KUBE_VERSIONS))
endif
kube_modfile = $(if $(filter $(1),$(KUBE_NEWEST)),go.mod,go.$(1).mod)

# Every version has a folder of its own, bin/k8s/VERSION, with its
# kube-apiserver and the one etcd; internal/localapi picks the newest when
# KUBEBUILDER_ASSETS is not set (go run ./examples/...).
K8S_BIN := $(BIN)/k8s
ETCD := $(K8S_BIN)/etcd-$(ETCD_VERSION)
assets = $(K8S_BIN)/$(1)

# A KUBEBUILDER_ASSETS from the environment (controller-runtime's
# setup-envtest, say) names binaries a user already has: every target runs
# against them, builds none, and `make test` runs once. Otherwise the
# targets run against the binaries built here.
# (An empty one counts as unset, as envtest reads it; a relative one is
# made absolute, since each test runs in its package's folder.)
ifneq ($(and $(filter environment command line,$(origin KUBEBUILDER_ASSETS)),$(strip $(KUBEBUILDER_ASSETS))),)
ifeq ($(and $(wildcard $(KUBEBUILDER_ASSETS)/kube-apiserver),$(wildcard $(KUBEBUILDER_ASSETS)/etcd)),)
$(error KUBEBUILDER_ASSETS=$(KUBEBUILDER_ASSETS) has no kube-apiserver and etcd: fill it, or unset it to build them here)
endif
USER_ASSETS := $(abspath $(KUBEBUILDER_ASSETS))
override KUBEBUILDER_ASSETS := $(USER_ASSETS)
export KUBEBUILDER_ASSETS
TEST_VERSIONS := user
else
export KUBEBUILDER_ASSETS := $(call assets,$(KUBE_VERSION))
TEST_VERSIONS := $(KUBE_VERSION) $(filter-out $(KUBE_VERSION),$(KUBE_VERSIONS))
endif
# Every target runs against the local API server it starts, never the
# cluster of the shell's kubeconfig: the tests and the demo write and delete.
export KUBECONFIG :=
export USE_EXISTING_CLUSTER := false

# The race detector needs cgo, which Go turns off where it finds no C
# compiler; the tests then run without it (the test target says so).
RACE := $(if $(filter 1,$(shell $(GO) env CGO_ENABLED)),-race,)

# Prints a line for every 100 modules downloaded and every 100 packages
# `go build -v` compiles, so a first build that takes minutes shows it is
# moving without flooding the log. Any other line (an error: it has a space
# or a colon) is printed as it is.
PROGRESS := awk '/^go: (finding|extracting) / { next } /^go: downloading / { if (++d % 100 == 0) { printf "   ... %d modules downloaded\n", d; fflush() } next } / |:/ { print; fflush(); next } { n++ } n % 100 == 0 { printf "   ... %d packages compiled\n", n; fflush() } END { printf "   ... %d packages compiled\n", n }'

.PHONY: all
all: test

.PHONY: envtest-bins
envtest-bins: $(if $(USER_ASSETS),,$(call assets,$(KUBE_VERSION))/kube-apiserver $(call assets,$(KUBE_VERSION))/etcd) ## Build kube-apiserver (KUBE_VERSION) and etcd for envtest, once.

.PHONY: envtest-bins-all
envtest-bins-all: $(if $(USER_ASSETS),,$(foreach v,$(KUBE_VERSIONS),$(call assets,$(v))/kube-apiserver $(call assets,$(v))/etcd)) ## Build kube-apiserver of every supported release, and etcd, once.

# The version stamped in as Kubernetes' own build stamps it
# (hack/lib/version.sh), so that `kube-apiserver --version` and the
# server's /version (which discovery reads) tell the release, not
# v0.0.0-master. The build date is the release's date, from the module
# proxy, not the day of the build.
version_ldflags = $(foreach kv,gitVersion=$(1) gitMajor=$(patsubst v%,%,$(word 1,$(subst ., ,$(1)))) \
	gitMinor=$(word 2,$(subst ., ,$(1))) gitTreeState=clean gitCommit=,-X k8s.io/component-base/version.$(kv))

define kube_apiserver_rule
$(call assets,$(1))/kube-apiserver: $(KUBE_TOOLS)/$(call kube_modfile,$(1)) $(KUBE_TOOLS)/main.go
	@mkdir -p $$(@D)
	@echo ">> building kube-apiserver $(1) into $$(@D) (first build: about 5 minutes)"
	@cd $(KUBE_TOOLS) && \
		date=$$$$($(GO) list -modfile=$(call kube_modfile,$(1)) -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes) && \
		CGO_ENABLED=0 $(GO) build -v -modfile=$(call kube_modfile,$(1)) -o $$@.tmp \
		-ldflags "$(call version_ldflags,$(1)) -X k8s.io/component-base/version.buildDate=$$$$date" . 2>&1 | $(PROGRESS)
	@mv $$@.tmp $$@
	@echo ">> kube-apiserver $(1) ready: $$$$($$@ --version)"

$(call assets,$(1))/etcd: $(ETCD)
	@mkdir -p $$(@D)
	@ln -sf ../$$(notdir $(ETCD)) $$@
endef
$(foreach v,$(KUBE_VERSIONS),$(eval $(call kube_apiserver_rule,$(v))))

$(ETCD): hack/tools/etcd/go.mod hack/tools/etcd/main.go
	@mkdir -p $(K8S_BIN)
	@# The binaries of the layout before bin/k8s/VERSION, unused now.
	@rm -f $(K8S_BIN)/kube-apiserver $(K8S_BIN)/etcd
	@echo ">> building etcd $(ETCD_VERSION) into $(K8S_BIN) (first build: about 2 minutes)"
	@cd hack/tools/etcd && CGO_ENABLED=0 $(GO) build -v -o $@.tmp . 2>&1 | $(PROGRESS)
	@mv $@.tmp $@
	@echo ">> etcd ready"

# kubectl, for the test that runs the leaselock command as the kubectl
# plugin "kubectl leaselock" (cmd/leaselock): built from its module, as the
# API server is.
KUBECTL := $(BIN)/kubectl
export LEASELOCK_KUBECTL := $(KUBECTL)

$(KUBECTL): hack/tools/kubectl/go.mod hack/tools/kubectl/main.go
	@mkdir -p $(BIN)
	@echo ">> building kubectl into $(BIN) (first build: about a minute)"
	@cd hack/tools/kubectl && CGO_ENABLED=0 $(GO) build -v -o $@.tmp . 2>&1 | $(PROGRESS)
	@mv $@.tmp $@

# Named by the Go version that builds it: staticcheck must understand the Go
# it checks, so a new Go builds a new one, and the old can be deleted.
STATICCHECK := $(BIN)/staticcheck-$(shell $(GO) env GOVERSION)

$(STATICCHECK): hack/tools/lint/go.mod
	@mkdir -p $(BIN)
	@echo ">> building staticcheck"
	@cd hack/tools/lint && $(GO) build -o $@ honnef.co/go/tools/cmd/staticcheck

.PHONY: lint
lint: $(STATICCHECK) ## go vet and staticcheck over every package, the chart tool's included.
	$(GO) vet ./...
	$(STATICCHECK) ./...
	cd hack/tools/benchchart && $(GO) vet ./... && $(STATICCHECK) ./...

# The packages whose tests start an API server (through internal/testenv,
# internal/localapi or internal/exampletest): `make test` runs them against
# every supported release, and the rest once.
SERVER_PKGS = $(shell $(GO) list -f '{{.ImportPath}}{{range .TestImports}} {{.}}{{end}}{{range .XTestImports}} {{.}}{{end}}' ./... \
	| awk '/ github.com\/leaselock\/leaselock\/internal\/(testenv|localapi|exampletest)( |$$)/ { print $$1 }')

.PHONY: test
test: lint $(if $(USER_ASSETS),,envtest-bins-all) $(KUBECTL) ## Every test, against every supported kube-apiserver release (the other tests once).
	@$(if $(RACE),,echo ">> no C compiler found: the tests run without the race detector (install gcc for it)")
	@for v in $(TEST_VERSIONS); do \
		if [ "$$v" = user ]; then dir="$(USER_ASSETS)"; else dir="$(K8S_BIN)/$$v"; fi; \
		if [ "$$v" = "$(firstword $(TEST_VERSIONS))" ]; then pkgs=./...; else pkgs="$(or $(SERVER_PKGS),$(error no package found whose tests start an API server))"; fi; \
		echo ">> go test against $$("$$dir/kube-apiserver" --version) and etcd $$("$$dir/etcd" --version | awk '/^etcd Version/ { print $$3 }') in $$dir"; \
		echo "   go test $(RACE) -count=1 $$pkgs"; \
		KUBEBUILDER_ASSETS="$$dir" $(GO) test $(RACE) -count=1 $$pkgs || exit 1; \
	done
	cd hack/tools/benchchart && $(GO) test -count=1 ./...

# The run's medians, as JSON, from which the chart is drawn.
BENCH_FIGURES := $(BIN)/bench-figures.json

.PHONY: bench
bench: envtest-bins ## Benchmarks against the local API server, medians of 5 runs in one table, and docs/benchmarks.svg.
	@rm -f $(BENCH_FIGURES)
	LEASELOCK_BENCH_FIGURES=$(BENCH_FIGURES) $(GO) test -timeout 1h -run '^$$' -bench . -count 1 ./internal/bench
	cd hack/tools/benchchart && $(GO) run . -in $(BENCH_FIGURES) -out $(CURDIR)/docs/benchmarks.svg
	@echo ">> chart written to docs/benchmarks.svg"

# The commit that `make bench-ab` compares the work tree with, unless BEFORE
# names another: the last one before the bounded requests of issue 26 and
# the renewal of issue 22 changed the acquire path. The copy must have the
# API the twins are built with (internal/bench/before_test.go): a commit
# from 2d53df7 on.
BEFORE ?= 2d53df7
BENCH_AB_FIGURES := $(BIN)/bench-ab-figures.json

# hack/bench-before.sh copies the library as of BEFORE into
# internal/bench/_before, and the build tag adds a twin built from it to
# every row of the library. Twice the rows take longer than go test's
# default timeout of 10 minutes.
.PHONY: bench-ab
bench-ab: envtest-bins ## make bench with every row of the library beside its twin built from commit BEFORE (default 2d53df7), in one run; no chart.
	GO=$(GO) hack/bench-before.sh $(BEFORE)
	@rm -f $(BENCH_AB_FIGURES)
	LEASELOCK_BENCH_FIGURES=$(BENCH_AB_FIGURES) $(GO) test -tags leaselock_before -timeout 2h -run '^$$' -bench . -count 1 ./internal/bench

# The soak column of docs/reliability.md: the torture suite at a bigger size,
# the HA run on 5 etcd members and 3 API servers with 3 rounds of faults.
TORTURE_ENV := LEASELOCK_TORTURE_PROCS=5 LEASELOCK_TORTURE_GOROUTINES=4 LEASELOCK_TORTURE_OPS=40 \
	LEASELOCK_TORTURE_FAULT_RATE=0.25 LEASELOCK_TORTURE_CRASHES=3 LEASELOCK_TORTURE_RESTARTS=2 \
	LEASELOCK_TORTURE_HA_MEMBERS=5 LEASELOCK_TORTURE_HA_SERVERS=3 LEASELOCK_TORTURE_HA_ROUNDS=3
# A count, not a duration: with a duration, Go 1.26's fuzzing coordinator
# can fail a target with "context deadline exceeded" as the time runs out
# (Go issue 75804, fixed in Go 1.27). 50000 runs take about 20-40s here.
FUZZTIME ?= 50000x

.PHONY: torture
torture: envtest-bins ## The reliability suite at soak size (docs/reliability.md), then each fuzz target for FUZZTIME runs.
	$(TORTURE_ENV) $(GO) test $(RACE) -count=1 -timeout 30m -v ./internal/torture
	$(GO) test -run '^$$' -fuzz '^FuzzAcquireLockInput$$' -fuzztime $(FUZZTIME) ./resourcelock
	$(GO) test -run '^$$' -fuzz '^FuzzLockName$$' -fuzztime $(FUZZTIME) ./withlock

.PHONY: demo
demo: envtest-bins ## Replicas contending on a local API server, with the lock and then without; then demo-command.
	@$(GO) build -o $(BIN)/configmap-counter ./examples/configmap-counter
	$(BIN)/configmap-counter --replicas 4 --increments 25
	$(BIN)/configmap-counter --replicas 4 --increments 25 --no-lock
	@$(MAKE) --no-print-directory demo-command

.PHONY: leaselock
leaselock: ## Build the leaselock command into bin/, with bin/kubectl-leaselock, the same binary as a kubectl plugin.
	CGO_ENABLED=0 $(GO) build -o $(BIN)/leaselock ./cmd/leaselock
	@ln -sf leaselock $(BIN)/kubectl-leaselock

.PHONY: demo-command
demo-command: envtest-bins leaselock ## Processes that serialise a shell command with leaselock run, then the same without it.
	$(GO) run ./examples/leaselock-command/demo --leaselock $(BIN)/leaselock

.PHONY: clean
clean: ## Remove built binaries (the API server build takes minutes to redo), and make bench-ab's copy of the library.
	rm -rf $(BIN) internal/bench/_before
