# Two commands matter: `make test` runs every test, `make demo` runs the main
# job. Both build the local API server first when it is not there yet.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go

BIN := $(CURDIR)/bin
K8S_BIN := $(BIN)/k8s
KUBE_VERSION := v1.37.2
ETCD_VERSION := v3.6.16

# envtest finds kube-apiserver and etcd here.
export KUBEBUILDER_ASSETS := $(K8S_BIN)
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
envtest-bins: $(K8S_BIN)/kube-apiserver $(K8S_BIN)/etcd ## Build kube-apiserver and etcd for envtest, once.

$(K8S_BIN)/kube-apiserver: hack/tools/kube-apiserver/go.mod hack/tools/kube-apiserver/main.go
	@mkdir -p $(K8S_BIN)
	@echo ">> building kube-apiserver $(KUBE_VERSION) into $(K8S_BIN) (first build: about 5 minutes)"
	@cd hack/tools/kube-apiserver && CGO_ENABLED=0 $(GO) build -v -o $@.tmp . 2>&1 | $(PROGRESS)
	@mv $@.tmp $@
	@echo ">> kube-apiserver ready"

$(K8S_BIN)/etcd: hack/tools/etcd/go.mod hack/tools/etcd/main.go
	@mkdir -p $(K8S_BIN)
	@echo ">> building etcd $(ETCD_VERSION) into $(K8S_BIN) (first build: about 2 minutes)"
	@cd hack/tools/etcd && CGO_ENABLED=0 $(GO) build -v -o $@.tmp . 2>&1 | $(PROGRESS)
	@mv $@.tmp $@
	@echo ">> etcd ready"

# Named by the Go version that builds it: staticcheck must understand the Go
# it checks, so a new Go builds a new one, and the old can be deleted.
STATICCHECK := $(BIN)/staticcheck-$(shell $(GO) env GOVERSION)

$(STATICCHECK): hack/tools/lint/go.mod
	@mkdir -p $(BIN)
	@echo ">> building staticcheck"
	@cd hack/tools/lint && $(GO) build -o $@ honnef.co/go/tools/cmd/staticcheck

.PHONY: lint
lint: $(STATICCHECK) ## go vet and staticcheck over every package.
	$(GO) vet ./...
	$(STATICCHECK) ./...

.PHONY: test
test: lint envtest-bins ## Every test, the integration tests against the local API server included.
	@$(if $(RACE),,echo ">> no C compiler found: the tests run without the race detector (install gcc for it)")
	$(GO) test $(RACE) -count=1 ./...

.PHONY: bench
bench: envtest-bins ## Benchmarks against the local API server, medians of 5 runs in one table.
	$(GO) test -run '^$$' -bench . -count 1 ./internal/bench

# The soak column of docs/reliability.md: the torture suite at a bigger size.
TORTURE_ENV := LEASELOCK_TORTURE_PROCS=5 LEASELOCK_TORTURE_GOROUTINES=4 LEASELOCK_TORTURE_OPS=40 \
	LEASELOCK_TORTURE_FAULT_RATE=0.25 LEASELOCK_TORTURE_CRASHES=3 LEASELOCK_TORTURE_RESTARTS=2
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
demo: envtest-bins ## Replicas contending on a local API server, with the lock and then without.
	@$(GO) build -o $(BIN)/configmap-counter ./examples/configmap-counter
	$(BIN)/configmap-counter --replicas 4 --increments 25
	$(BIN)/configmap-counter --replicas 4 --increments 25 --no-lock

.PHONY: clean
clean: ## Remove built binaries (the API server build takes minutes to redo).
	rm -rf $(BIN)
