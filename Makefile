# Set-up and the two everyday commands. `make demo` and `make test` create
# .venv with a Python 3.10 (Lava's only supported version) on first use and
# reuse it afterwards; the install re-runs only when pyproject.toml changes.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= runs/demo
ARGS   ?=

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@py="$$(scripts/find-python310.sh)" || exit 1; \
	if [ ! -x $(PY) ]; then echo "creating $(VENV) with $$py"; "$$py" -m venv $(VENV) || exit 1; fi; \
	$(PY) -m pip install --quiet -e '.[test]' && touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dpap-export --target loihi-sim --profile loihi2 --out $(OUT) --force $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

clean:
	rm -rf $(VENV) runs build *.egg-info
