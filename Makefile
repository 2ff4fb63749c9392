# `make repro` and `make test` work on a fresh clone: both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Stage commands in dvc.yaml are `python -m ...`: the venv's bin must come first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install repro test serve tensorboard plots preset clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

repro: install          ## run the whole pipeline (cached stages are skipped)
	dvc repro

# Test files spread over this many processes (a file's tests stay together, sharing its
# fixtures): most end-to-end tests wait on other processes (servers, DVC, torchrun).
TEST_WORKERS ?= 2

test: install           ## unit, stage and end-to-end tests
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

serve: install          ## serve the Prefect deployment finetune/main (needs PREFECT_API_URL)
	$(BIN)/python -m flows.finetune serve

tensorboard: install    ## watch training live on http://127.0.0.1:6006 (runs: pretrain, train, eval)
	$(BIN)/tensorboard --logdir_spec pretrain:logs/pretrain,train:logs/tensorboard,eval:logs/eval \
	  --host 127.0.0.1 \
	  --port 6006

plots: install          ## render dvc plots offline into dvc_plots/index.html
	dvc plots show

preset: install         ## run presets/$(NAME).yaml as the DVC experiment $(NAME)
	@test -n "$(NAME)" || { echo "usage: make preset NAME=<name>; presets:" $$(ls presets | sed 's/\.yaml$$//'); exit 2; }
	$(BIN)/finetune preset $(NAME)

clean:                  ## remove pipeline outputs (`dvc checkout` brings them back from the cache)
	rm -rf data models logs checkpoints checkpoints-pretrain predictions reports  # metrics/, plots/: git
