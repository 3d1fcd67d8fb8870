# postpy: the two commands are `make run` and `make test`.
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc/postpy
SPOOLDIR ?= /var/spool/postpy
INITDIR ?= /etc/init.d
UNITDIR ?= /etc/systemd/system
# The interpreter the installed programs run with (not the checkout's venv).
INSTALL_PYTHON ?= $(shell python3 -c 'import sys; print(sys.executable)')
INSTALL_ARGS = --prefix '$(PREFIX)' --destdir '$(DESTDIR)' --sysconfdir '$(SYSCONFDIR)' \
	--spooldir '$(SPOOLDIR)' --initdir '$(INITDIR)' --unitdir '$(UNITDIR)' --python '$(INSTALL_PYTHON)'

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

# Install on this host (see scripts/install.py for the layout); keeps existing config.
install:
	$(INSTALL_PYTHON) scripts/install.py install $(INSTALL_ARGS)

# Remove what install added; configuration and queue stay.
uninstall:
	$(INSTALL_PYTHON) scripts/install.py uninstall $(INSTALL_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
