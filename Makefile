# intake: every target a developer or CI needs. `make help` lists them.
export GOTOOLCHAIN := local
GO      ?= go
BIN     := bin/intake
PKGS    := ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## build the intake binary into bin/
	$(GO) build -o $(BIN) ./cmd/intake

.PHONY: run
run: build ## run everything on this machine (intake dev): Temporal + UI :8233, MongoDB :27017, API :8080
	./$(BIN) dev

# The console's browser tests drive Debian's chromium headless (TestConsole, BenchmarkConsoleDeliveries).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps-browser
deps-browser: ## install Debian's chromium for the console's browser tests (once; needs apt)
	@if [ -x $(CHROMIUM) ]; then echo "chromium present: $(CHROMIUM)"; else \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; fi

.PHONY: test
test: lint ## lint, then unit, workflow and end-to-end tests (browser tests need make deps-browser), then a short fuzz run
	$(GO) test -count=1 -timeout 25m $(PKGS)
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME)

# Native Go fuzz targets: signature verification, delivery keys, JQ compilation and evaluation,
# and the delivery body checks (any body kept and given back byte for byte).
# make test fuzzes by execution count, not by time: a duration-based -fuzztime races Go's fuzz
# coordinator at its deadline (golang/go#75804, fixed only in Go 1.27) and fails with a bare
# "context deadline exceeded" on a loaded machine although no input failed.
TEST_FUZZTIME ?= 20000x
FUZZ_TARGETS := ./signature:FuzzVerify ./starters:FuzzDeliveryKey ./mappings:FuzzCompileAndRun ./store:FuzzBodyEncoding
FUZZTIME ?= 2m

.PHONY: fuzz
fuzz: ## fuzz every target for FUZZTIME each (default 2m; make test runs 20000 executions each)
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$fn ($$pkg) for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done

.PHONY: test-unit
test-unit: ## unit and workflow tests only (no servers)
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /tests)

.PHONY: lint
lint: ## gofmt, go vet and the deployment files (k8s manifests decoded strictly, compose order)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) test -count=1 ./deploy/

.PHONY: bench
# BenchmarkIntake prints every throughput figure from one run on one server; the others
# (BulkReplay, KafkaStart, Console) are selected by name, BENCH=. runs them all.
BENCH ?= ^BenchmarkIntake$$
bench: build ## all throughput figures in one run on one server (BENCH=BulkReplay|KafkaStart|Console selects another)
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime 1x -timeout 60m ./tests/
