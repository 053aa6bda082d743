# The README's two commands are `make run` and `make test`; each sets up what
# is missing first (scripts/setup is idempotent and fast when nothing is).
PYTHON := /usr/bin/python3
# Go lives at /usr/local/go on machines of this kind, even where PATH lacks it.
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin/htcstream

.PHONY: run test setup build vet test-go test-python clean

setup:
	@scripts/setup

build: setup
	$(GO) build -o $(BIN) ./cmd/htcstream

run: build
	scripts/run-default

vet:
	$(GO) vet ./...

test: setup vet test-go test-python

test-go:
	$(GO) test -count=1 ./...

test-python:
	cd training && $(PYTHON) -m pytest -q

clean:
	rm -rf bin build
