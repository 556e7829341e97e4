# edge — common tasks. `make test` is what CI runs.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
PREFIX  ?= /usr/local

.PHONY: build test run bench install uninstall deb fuzz clean screenshots

build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/edge ./cmd/edge

test:
	./scripts/test.sh

run:
	go run ./cmd/edge run -config config.example.yaml

bench: build
	./bench/run.sh

fuzz:
	go test ./config -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 60s
	go test ./server -run '^$$' -fuzz '^FuzzCleanPath$$' -fuzztime 30s
	go test ./server -run '^$$' -fuzz '^FuzzSiteMatch$$' -fuzztime 30s
	go test ./server -run '^$$' -fuzz '^FuzzFraming$$' -fuzztime 60s
	go test ./server -run '^$$' -fuzz '^FuzzProxyConnSniff$$' -fuzztime 30s
	go test ./static -run '^$$' -fuzz '^FuzzPath$$' -fuzztime 60s
	go test ./static -run '^$$' -fuzz '^FuzzParseAcceptEncoding$$' -fuzztime 30s
	go test ./internal/wsframe -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime 30s
	# Network targets: coverage from server goroutines varies run to run, and
	# minimising such inputs hangs the fuzz worker, so minimisation is off.
	go test ./hub -run '^$$' -fuzz '^FuzzReader$$' -fuzztime 60s -fuzzminimizetime 0
	go test ./proxy -run '^$$' -fuzz '^FuzzProxyRequest$$' -fuzztime 60s -fuzzminimizetime 0

install: build
	./scripts/install.sh

uninstall:
	./scripts/install.sh --uninstall

# bin/edge_<version>_<arch>.deb (nfpm; packaging/deb/)
# docs/dashboard.png and docs/demo.png, from the browser tests.
screenshots:
	go test ./cmd/edge -run 'TestBrowserDashboard|TestBrowserDemo' -count=1 -screenshots

deb:
	./scripts/deb.sh

clean:
	rm -rf bin
