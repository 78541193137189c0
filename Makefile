# cellsync Makefile. Every tool is pinned and installed under bin/ from the Go module proxy;
# the envtest control plane (kube-apiserver, etcd) and kwok are built from Go modules too,
# because the machines we build on reach no other download site.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
export GOTOOLCHAIN ?= local

LOCALBIN ?= $(CURDIR)/bin
GO ?= go

CONTROLLER_GEN_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.8.1
KWOK_VERSION ?= v0.8.0
K8S_VERSION ?= v1.37.2
ETCD_VERSION ?= v3.6.7
GOLANGCI_LINT_VERSION ?= v2.6.2

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_GEN_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
KWOK ?= $(LOCALBIN)/kwok-$(KWOK_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
ENVTEST_DIR ?= $(LOCALBIN)/k8s/$(K8S_VERSION:v%=%)-linux-amd64

# An existing KUBEBUILDER_ASSETS wins; otherwise the assets built here are used.
ifeq ($(strip $(KUBEBUILDER_ASSETS)),)
TEST_ASSETS := $(ENVTEST_DIR)
ENVTEST_DEP := envtest
else
TEST_ASSETS := $(KUBEBUILDER_ASSETS)
ENVTEST_DEP :=
endif

TEST_ENV = KUBEBUILDER_ASSETS=$(TEST_ASSETS) CELLSYNC_KWOK=$(KWOK) CELLSYNC_KUSTOMIZE=$(KUSTOMIZE)
TEST_TIMEOUT ?= 25m
BENCH_TIME ?= 3x
# The end-to-end benchmark reports the median of this many git pushes.
E2E_BENCH_RUNS ?= 7x

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC under config/.
	$(CONTROLLER_GEN) crd paths="./api/hub/..." output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) crd paths="./api/agent/..." output:crd:artifacts:config=config/agent/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=hub-manager-role paths="./controllers/hub/..." output:rbac:artifacts:config=config/rbac
	$(CONTROLLER_GEN) rbac:roleName=agent-manager-role paths="./controllers/agent/..." output:rbac:artifacts:config=config/agent/rbac

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deep-copy code for the APIs.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt over the tree.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint.
	$(GOLANGCI_LINT) run ./...

.PHONY: verify
verify: manifests generate fmt ## Fail when generation or formatting changes the tree.
	git diff --exit-code -- api config

# The agent's suite runs on its own after the rest: its hostile-branch cases push and stream
# hundreds of MB through the Git server and would starve the other suites' simulated heartbeats
# (and its own isolation timing) on a 2-core machine.
AGENT_SUITE := ./controllers/agent/...

.PHONY: test
test: $(ENVTEST_DEP) $(KWOK) $(KUSTOMIZE) manifests generate vet ## Run every test: unit, envtest integration and fuzz seeds.
	$(TEST_ENV) $(GO) test $$($(GO) list ./... | grep -v '/controllers/agent$$') -count=1 -timeout $(TEST_TIMEOUT)
	$(TEST_ENV) $(GO) test $(AGENT_SUITE) -count=1 -timeout $(TEST_TIMEOUT)

.PHONY: fuzz
fuzz: ## Fuzz the renderer and the agent's manifest guard for a while each (FUZZTIME=30s).
	$(GO) test ./hub/render -run '^$$' -fuzz FuzzRender -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./agent/manifests -run '^$$' -fuzz FuzzBuildAndCheck -fuzztime $${FUZZTIME:-30s}

.PHONY: bench
bench: $(ENVTEST_DEP) $(KWOK) ## Run the benchmarks and print them as a table.
	( $(TEST_ENV) $(GO) test ./hub/... ./agent/... -run '^$$' -bench . -benchmem -benchtime $(BENCH_TIME) -timeout 30m && \
	  $(TEST_ENV) $(GO) test ./test/e2e -run '^$$' -bench . -benchtime $(E2E_BENCH_RUNS) -timeout 30m ) | tee bin/bench.txt | $(GO) run ./test/tools/benchtable

##@ Build

.PHONY: build
build: ## Build the hub, agent and kubectl-cells binaries into bin/.
	$(GO) build -o $(LOCALBIN)/hub ./hub/cmd/hub
	$(GO) build -o $(LOCALBIN)/agent ./agent/cmd/agent
	$(GO) build -o $(LOCALBIN)/kubectl-cells ./hub/cmd/kubectl-cells

.PHONY: run
run: ## Run the hub against the current kubeconfig (GIT_URL=… required).
	$(GO) run ./hub/cmd/hub --git-url=$(GIT_URL)

.PHONY: demo
demo: $(ENVTEST_DEP) $(KWOK) ## Run the whole system locally (the quickstart); ARGS="--once" exits when the canary completed.
	$(TEST_ENV) $(GO) run ./test/demo $(ARGS)

##@ Tools

.PHONY: envtest
envtest: $(ENVTEST_DIR)/kube-apiserver ## Build kube-apiserver and etcd from Go modules into bin/k8s.
$(ENVTEST_DIR)/kube-apiserver:
	bash test/tools/build-envtest.sh $(ENVTEST_DIR) $(K8S_VERSION) $(ETCD_VERSION)

$(CONTROLLER_GEN):
	GOBIN=$(LOCALBIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	mv $(LOCALBIN)/controller-gen $@

$(KUSTOMIZE):
	GOBIN=$(LOCALBIN) $(GO) install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	mv $(LOCALBIN)/kustomize $@

$(KWOK):
	GOBIN=$(LOCALBIN) $(GO) install sigs.k8s.io/kwok/cmd/kwok@$(KWOK_VERSION)
	mv $(LOCALBIN)/kwok $@

$(GOLANGCI_LINT):
	GOBIN=$(LOCALBIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(LOCALBIN)/golangci-lint $@
