# ENRS - the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OIDC_NODE := tests/oidc_provider/node_modules/.package-lock.json
PG_ADMIN_URL ?= $(or $(ENRS_TEST_DATABASE_URL),postgresql+psycopg://postgres@127.0.0.1:5432/postgres)
SRC := src tests bench
CONSTRAINTS := constraints.txt
# pytest-xdist workers per backend: most of the suite waits on sockets, subprocesses and a
# browser, so three workers keep two cores busy (45 min on SQLite in one process, 11 in three)
TEST_WORKERS ?= 3
# The imaging viewer (OHIF, prebuilt): npm's tarball at this version, checked by its sha512
# (npm view @ohif/app@VERSION dist.integrity), unpacked into vendor/ohif/VERSION (git-ignored).
OHIF_VERSION := 3.13.2
OHIF_SHA512 := 5997719a9986eeba85816f5924b71b82bdd70ad2e2d4a0cd3e831a798e4f3deea3e06e1f8c48e393271933a0ba664d85f3b04ac457e9abe8dde715d907d13c10
OHIF_DIR := vendor/ohif/$(OHIF_VERSION)
OHIF := $(OHIF_DIR)/index.html

.PHONY: run test lint typecheck test-sqlite test-postgresql test-deps install constraints clean viewer

# The versions CI tests, pinned in constraints.txt: a fresh clone installs exactly those.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make run: install, migrate, load the demo data, start every listener (SQLite + ./var/)
run: $(STAMP) $(OHIF)
	$(BIN)/enrs migrate
	$(BIN)/enrs demo load
	ENRS_VIEWER_DIR="$${ENRS_VIEWER_DIR:-$(CURDIR)/$(OHIF_DIR)}" $(BIN)/enrs serve --dev

## make test: lint, type-check, the whole suite on SQLite then on PostgreSQL
test: lint typecheck test-sqlite test-postgresql

lint: $(STAMP)
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)

typecheck: $(STAMP)
	$(BIN)/mypy src

test-deps: $(STAMP) $(OIDC_NODE) $(OHIF)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@command -v postfix >/dev/null 2>&1 && command -v dovecot >/dev/null 2>&1 \
	  && [ -x /usr/lib/dovecot/imap ] && [ -x /usr/lib/dovecot/lmtp ] || { \
	  echo "installing Debian's Postfix and Dovecot for the messaging tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "postfix postfix/main_mailer_type select No configuration" | $$SUDO debconf-set-selections; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    postfix dovecot-core dovecot-imapd dovecot-lmtpd >/dev/null; }
	@command -v xmlsec1 >/dev/null 2>&1 || { \
	  echo "installing Debian's xmlsec1 to verify the DMP signatures in the tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq xmlsec1 >/dev/null; }
	@command -v storescu >/dev/null 2>&1 && command -v echoscu >/dev/null 2>&1 || { \
	  echo "installing Debian's dcmtk (storescu, echoscu) for the imaging archive's tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dcmtk >/dev/null; }
	@getent passwd vmail >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin vmail; }

$(OIDC_NODE): tests/oidc_provider/package-lock.json
	npm ci --prefix tests/oidc_provider --no-audit --no-fund --loglevel=error

test-sqlite: test-deps
	ENRS_TEST_BACKEND=sqlite $(BIN)/pytest -n $(TEST_WORKERS)

test-postgresql: test-deps
	@$(BIN)/python -c "import sqlalchemy as s; s.create_engine('$(PG_ADMIN_URL)').connect().close()" 2>/dev/null || { \
	  echo "PostgreSQL is not reachable at $(PG_ADMIN_URL): start it or set ENRS_TEST_DATABASE_URL"; exit 1; }
	ENRS_TEST_BACKEND=postgresql ENRS_TEST_DATABASE_URL='$(PG_ADMIN_URL)' $(BIN)/pytest -n $(TEST_WORKERS)

## make viewer: the imaging viewer (OHIF) the platform serves under /imagerie/visionneuse
viewer: $(OHIF)

$(OHIF):
	@echo "fetching the imaging viewer @ohif/app@$(OHIF_VERSION) (npm pack, sha512 checked)"
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	npm pack "@ohif/app@$(OHIF_VERSION)" --pack-destination "$$tmp" --silent >/dev/null && \
	echo "$(OHIF_SHA512)  $$tmp/ohif-app-$(OHIF_VERSION).tgz" | sha512sum -c --quiet - && \
	mkdir -p "$$tmp/dist" && \
	tar -xzf "$$tmp/ohif-app-$(OHIF_VERSION).tgz" -C "$$tmp/dist" --strip-components=2 package/dist && \
	rm -rf "$(OHIF_DIR)" && mkdir -p "$$(dirname $(OHIF_DIR))" && mv "$$tmp/dist" "$(OHIF_DIR)"

## make constraints: re-resolve the newest versions pyproject.toml allows, pin them all
constraints:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp" build' EXIT && \
	$(PYTHON) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/pip" install -q --upgrade pip && \
	"$$tmp/venv/bin/pip" install -q '.[dev]' && \
	{ grep "^#" $(CONSTRAINTS); "$$tmp/venv/bin/pip" freeze --exclude enrs; } > "$$tmp/new" && \
	mv "$$tmp/new" $(CONSTRAINTS) && echo "$(CONSTRAINTS) regenerated: review git diff, then make install"

clean:
	rm -rf $(VENV) tests/oidc_provider/node_modules vendor/ohif .mypy_cache .ruff_cache .pytest_cache
