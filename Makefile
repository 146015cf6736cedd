# Two entry points for a fresh machine: `make benchmark` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# KLUE NER: `make benchmark DATA=DIR`, else $KNER_DATA, else the release beside the clone
# (../shared/data/klue-ner-v1.1) if it is there, else the Hugging Face hub copy (kner decides).
DATA ?= $(if $(KNER_DATA),,$(wildcard ../shared/data/klue-ner-v1.1))
MODELS ?= crf
OUT ?= bench

.PHONY: setup browser test benchmark

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,test]'
	touch $@

setup: $(VENV)/.installed

# The browser test drives Debian's headless Chromium; install it when missing (needs root/apt).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)

test: setup browser
	$(PY) -m pytest -q

benchmark: setup
	$(VENV)/bin/kner benchmark --models $(MODELS) $(if $(DATA),--data $(DATA)) --out $(OUT)
