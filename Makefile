# postpy: the two commands are `make run` and `make test`.
PREFIX ?= /usr/local
DESTDIR ?=
VENV = .venv
PY = $(VENV)/bin/python

.PHONY: run test venv lint typecheck pytest install uninstall clean

venv:
	./scripts/bootstrap

# Run postpy from the checkout: ordinary user, 127.0.0.1:2525, queue in ./spool.
run: venv
	$(VENV)/bin/postpy -c etc start-fg

test: venv
	./scripts/test-deps
	$(MAKE) lint typecheck pytest

lint: venv
	$(VENV)/bin/ruff check postpy tests libexec benchmarks

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
