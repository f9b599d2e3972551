# Machine Monitor: the two commands a person needs are `make run` and `make test`.
# Every target sets up what it needs first (Python venv in .venv/, Kafka jars in the
# per-user cache via Maven, system packages where root may install them).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test bench venv system-deps jars clean screenshot bundle install-desktop

$(STAMP): pyproject.toml
	@echo "== setting up Python environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,build]'
	@touch $(STAMP)

venv: $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

jars: venv
	$(PY) -m producer broker fetch

run: venv system-deps jars
	$(PY) -m desktop

test: venv system-deps jars
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: venv system-deps jars
	$(PY) bench/run_all.py

screenshot: venv system-deps jars
	QT_QPA_PLATFORM=offscreen $(PY) -m desktop --screenshot shot.png --after 20

# The installed app: dist/MachineMonitor/ (one folder with its own Java runtime and broker jars).
bundle: venv system-deps jars
	$(PY) -m PyInstaller build.spec --noconfirm
	@du -sh dist/MachineMonitor

# The app in this user's desktop menu, with its icon (freedesktop desktop entry).
install-desktop:
	@[ -x dist/MachineMonitor/MachineMonitor ] || $(MAKE) bundle
	bash dist/MachineMonitor/_internal/resources/desktop/install.sh dist/MachineMonitor

clean:
	rm -rf $(VENV) build dist .pytest_cache
