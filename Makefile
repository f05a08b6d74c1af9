# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= $(abspath ../shared)
export TRUSTCAM_MODEL_SOURCES ?= $(SHARED)/models
export TRUSTCAM_DATA_DIR ?= $(SHARED)/data
export TRUSTCAM_HOME ?= $(CURDIR)/var
APT_PACKAGES := ffmpeg libgl1 libglib2.0-0 chromium mosquitto postgresql
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup system-deps models lint bench clean

# The sample clip plays (looping, at its own speed) as a live camera; prints the URL, the certificate fingerprint
# and, on first start, the setup token for the first admin. Runs until Ctrl-C.
demo: setup models
	$(BIN)/trustcam run --config examples/demo.yaml

# Tests run in 2 processes (pytest-xdist): many wait on real time (live cameras, brokers, receivers).
TEST_WORKERS ?= 2
test: setup models
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest -n $(TEST_WORKERS)

setup: system-deps $(VENV)/.installed

# Debian packages the product and its tests need (ffmpeg for test streams, libGL for OpenCV, chromium for
# the browser tests, driven by Playwright at /usr/bin/chromium; mosquitto, the MQTT broker the integration
# tests start on a free port — its system service is not needed).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,adversarial,cluster]'
	touch $@

# Copies pinned models from TRUSTCAM_MODEL_SOURCES (checking sha256); downloads only if absent there.
models: $(VENV)/.installed
	echo "$(TRUSTCAM_HOME)" > $(VENV)/trustcam-home  # .venv/bin/trustcam finds these models without variables
	$(BIN)/trustcam models install

lint: setup
	$(BIN)/ruff check src tests bench

bench: setup models
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
