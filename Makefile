# postpy: the two commands are `make run` and `make test`.
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc/postpy
SPOOLDIR ?= /var/spool/postpy
INITDIR ?= /etc/init.d
UNITDIR ?= /etc/systemd/system
ALIASES ?= /etc/aliases
# The interpreter the installed programs run with (not the checkout's venv):
# the system's python3 when it is 3.11 or later (daemons running as postpy
# must be able to read its library), else the first python3 on PATH.
INSTALL_PYTHON ?= $(shell for p in /usr/bin/python3 python3; do \
	$$p -c 'import sys; assert sys.version_info >= (3, 11); print(sys.executable)' 2>/dev/null && break; done)
INSTALL_ARGS = --prefix '$(PREFIX)' --destdir '$(DESTDIR)' --sysconfdir '$(SYSCONFDIR)' \
	--spooldir '$(SPOOLDIR)' --initdir '$(INITDIR)' --unitdir '$(UNITDIR)' --aliases '$(ALIASES)' \
	--python '$(INSTALL_PYTHON)'

VENV = .venv
PY = $(VENV)/bin/python

.PHONY: run test venv lint typecheck pytest install uninstall clean

venv:
	./scripts/bootstrap

# Run postpy from the checkout: ordinary user, 127.0.0.1:2525, queue in ./spool.
run: venv
	$(VENV)/bin/newaliases -C etc
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

# Install on this host (layout and options: scripts/install.py); keeps existing
# config, aliases and queue, and sets aside (dpkg-divert) another MTA's files.
install:
	@test -n '$(INSTALL_PYTHON)' || { echo 'make install: needs Python 3.11 or later (set INSTALL_PYTHON)' >&2; exit 1; }
	$(INSTALL_PYTHON) scripts/install.py install $(INSTALL_ARGS)

# Remove what install added (its manifest) and restore what it set aside;
# configuration and queue stay.
uninstall:
	@test -n '$(INSTALL_PYTHON)' || { echo 'make uninstall: needs Python 3.11 or later (set INSTALL_PYTHON)' >&2; exit 1; }
	$(INSTALL_PYTHON) scripts/install.py uninstall $(INSTALL_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
