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
HELM_VERSION ?= v3.22.0

# The release these sources build: the binaries' --version, the image tags and the charts'
# appVersion (a test checks the charts agree).
VERSION ?= v0.2.0
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/cellsync/cellsync/controllers/version.Version=$(VERSION) -X github.com/cellsync/cellsync/controllers/version.Commit=$(COMMIT)
IMAGE_REGISTRY ?= ghcr.io/cellsync
# podman or docker, whichever is present.
CONTAINER_TOOL ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_GEN_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
KWOK ?= $(LOCALBIN)/kwok-$(KWOK_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)
ENVTEST_DIR ?= $(LOCALBIN)/k8s/$(K8S_VERSION:v%=%)-linux-amd64

# An existing KUBEBUILDER_ASSETS wins; otherwise the assets built here are used.
ifeq ($(strip $(KUBEBUILDER_ASSETS)),)
TEST_ASSETS := $(ENVTEST_DIR)
ENVTEST_DEP := envtest
else
TEST_ASSETS := $(KUBEBUILDER_ASSETS)
ENVTEST_DEP :=
endif

TEST_ENV = KUBEBUILDER_ASSETS=$(TEST_ASSETS) CELLSYNC_KWOK=$(KWOK) CELLSYNC_KUSTOMIZE=$(KUSTOMIZE) CELLSYNC_HELM=$(HELM)
TEST_TIMEOUT ?= 30m
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
manifests: $(CONTROLLER_GEN) $(KUSTOMIZE) ## Generate CRDs and RBAC under config/.
	$(CONTROLLER_GEN) crd:allowDangerousTypes=true paths="./api/hub/..." output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) crd paths="./api/agent/..." output:crd:artifacts:config=config/agent/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=hub-manager-role paths="./controllers/hub/..." output:rbac:artifacts:config=config/rbac
	$(CONTROLLER_GEN) rbac:roleName=agent-manager-role paths="./controllers/agent/..." output:rbac:artifacts:config=config/agent/rbac
	$(GO) run ./test/tools/chartsync
	$(KUSTOMIZE) build config/agent > hub/cmd/kubectl-cells/agent-install.yaml

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
	git diff --exit-code -- api config charts hub/cmd/kubectl-cells/agent-install.yaml

# The agent's suite runs on its own after the rest: its hostile-branch cases push and stream
# hundreds of MB through the Git server and would starve the other suites' simulated heartbeats
# (and its own isolation timing) on a 2-core machine.
AGENT_SUITE := ./controllers/agent/...

.PHONY: test
test: $(ENVTEST_DEP) $(KWOK) $(KUSTOMIZE) $(HELM) manifests generate vet ## Run every test: unit, envtest integration and fuzz seeds.
	$(TEST_ENV) $(GO) test $$($(GO) list ./... | grep -v '/controllers/agent$$') -count=1 -timeout $(TEST_TIMEOUT)
	$(TEST_ENV) $(GO) test $(AGENT_SUITE) -count=1 -timeout $(TEST_TIMEOUT)

.PHONY: fuzz
fuzz: ## Fuzz the renderer and the agent's manifest guard for a while each (FUZZTIME=30s).
	$(GO) test ./hub/render -run '^$$' -fuzz FuzzRender -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./agent/manifests -run '^$$' -fuzz FuzzBuildAndCheck -fuzztime $${FUZZTIME:-30s}

.PHONY: bench
bench: $(ENVTEST_DEP) $(KWOK) ## Run the benchmarks and print them as a table.
	( $(TEST_ENV) $(GO) test ./hub/... ./agent/... -run '^$$' -bench . -benchmem -benchtime $(BENCH_TIME) -timeout 30m && \
	  $(TEST_ENV) $(GO) test ./test/e2e -run '^$$' -bench . -benchtime $(E2E_BENCH_RUNS) -timeout 30m && \
	  $(TEST_ENV) $(GO) test ./test/fleet -run '^$$' -bench . -benchtime 1x -timeout 90m ) | tee bin/bench.txt | $(GO) run ./test/tools/benchtable

##@ Build

BINARIES := hub=./hub/cmd/hub agent=./agent/cmd/agent kubectl-cells=./hub/cmd/kubectl-cells

.PHONY: build
build: ## Build the hub, agent and kubectl-cells binaries into bin/ (static, versioned).
	@for b in $(BINARIES); do \
	  echo "go build -o $(LOCALBIN)/$${b%%=*} $${b#*=}"; \
	  CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(LOCALBIN)/$${b%%=*} $${b#*=}; \
	done

.PHONY: images
images: ## Build the hub, agent and kubectl-cells images (podman or docker), tagged $(IMAGE_REGISTRY)/<name>:$(VERSION).
	@test -n "$(CONTAINER_TOOL)" || { echo "make images needs podman or docker on PATH"; exit 1; }
	rm -rf $(LOCALBIN)/image && mkdir -p $(LOCALBIN)/image
	$(MAKE) --no-print-directory build LOCALBIN=$(LOCALBIN)/image
	cp /etc/ssl/certs/ca-certificates.crt $(LOCALBIN)/image/
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' > $(LOCALBIN)/image/passwd
	printf 'root:x:0:\nnonroot:x:65532:\n' > $(LOCALBIN)/image/group
	@for b in hub agent kubectl-cells; do \
	  echo "$(CONTAINER_TOOL) build --target $$b -t $(IMAGE_REGISTRY)/$$b:$(VERSION)"; \
	  $(CONTAINER_TOOL) build -q -f Containerfile --target $$b \
	    --label org.opencontainers.image.version=$(VERSION) --label org.opencontainers.image.revision=$(COMMIT) \
	    -t $(IMAGE_REGISTRY)/$$b:$(VERSION) $(LOCALBIN)/image >/dev/null; \
	done

.PHONY: run
run: ## Run the hub against the current kubeconfig (GIT_URL=… required).
	$(GO) run ./hub/cmd/hub --git-url=$(GIT_URL)

.PHONY: demo
demo: $(ENVTEST_DEP) $(KWOK) ## Run the whole system locally (the quickstart); ARGS="--once" exits when the canary completed.
	$(TEST_ENV) $(GO) run ./test/demo $(ARGS)

##@ Tools

.PHONY: helm
helm: $(HELM) ## Build helm from its Go module into bin/.
$(HELM):
	GOBIN=$(LOCALBIN)/helm.tmp $(GO) install -ldflags "-X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION)" helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv $(LOCALBIN)/helm.tmp/helm $(HELM) && rmdir $(LOCALBIN)/helm.tmp

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
