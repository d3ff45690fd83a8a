# Two commands do everything on a fresh machine (see README.md):
#   make book   execute every chapter and render the HTML book to _build/html
#   make test   unit tests, every chapter through nbval (quick profile), and a
#               no-execution build of the whole book with warnings as errors
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The install is redone when the dependency files' content changes (not their mtime).
DEPS_HASH := $(shell cat pyproject.toml constraints.txt 2>/dev/null | cksum | cut -d" " -f1)
STAMP := $(VENV)/.phbook-installed-$(DEPS_HASH)
# The profile of `make book`: full (the rendered book) or quick (a fast preview).
PROFILE ?= full
# Test workers: two kernels on the 2-core CI machine, one thread each.
WORKERS ?= 2
# Chapters `make book` executes at once (empty: one per CPU core; see tools/execute_book.py).
BOOK_JOBS ?=

# The chapters import the package from this checkout, whatever is installed.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export PHBOOK_PROGRESS ?= 0
export PYDEVD_DISABLE_FILE_VALIDATION := 1

ifeq ($(PROFILE),full)
BOOK_OUT := .
else
BOOK_OUT := _build/$(PROFILE)
endif

.PHONY: help install book student test unit notebooks book-check bench clean format lint \
	assignments

help:
	@echo "make book     execute every chapter (PROFILE=$(PROFILE)) and render _build/html"
	@echo "make test     unit tests + every chapter through nbval (quick) + book check"
	@echo "make student  the book with exercise solutions hidden (_build/student)"
	@echo "make assignments  autograded student notebooks + autograder (_build/assignments)"
	@echo "make bench    run every benchmark script in bench/ (PHBOOK_PROFILE honoured)"

install: $(STAMP)

# Create the virtual environment and install the pinned dependencies when missing.
$(STAMP):
	@start=$$SECONDS; \
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c constraints.txt -e ".[dev]"; \
	rm -f $(VENV)/.phbook-installed*; touch $(STAMP); \
	echo "[phase] install: $$((SECONDS - start)) s"

book: $(STAMP)
	@start=$$SECONDS; \
	PHBOOK_PROFILE=$(PROFILE) $(BIN)/python tools/execute_book.py $(BOOK_OUT)/_build \
		$(if $(BOOK_JOBS),--jobs $(BOOK_JOBS)) || true; \
	echo "[phase] execute ($(PROFILE) profile): $$((SECONDS - start)) s"; \
	PHBOOK_PROFILE=$(PROFILE) $(BIN)/jupyter-book build . -W --keep-going --all \
		--path-output $(BOOK_OUT); rc=$$?; \
	echo "[phase] book ($(PROFILE) profile): $$((SECONDS - start)) s"; \
	echo "Execution time of each chapter ($(PROFILE) profile):"; \
	$(BIN)/python tools/book_times.py $(BOOK_OUT)/_build || true; \
	echo "Open $(BOOK_OUT)/_build/html/index.html"; exit $$rc

student: $(STAMP)
	@PHBOOK_PROFILE=$(PROFILE) $(BIN)/python tools/execute_book.py _build/student/_build \
		$(if $(BOOK_JOBS),--jobs $(BOOK_JOBS)) || true; \
	sed -e 's/^\(\s*hide_solutions:\).*/\1 true/' _config.yml > _build_student_config.yml; \
	PHBOOK_PROFILE=$(PROFILE) $(BIN)/jupyter-book build . -W --keep-going --all \
		--config _build_student_config.yml --path-output _build/student \
		|| { rm -f _build_student_config.yml; exit 1; }; \
	rm -f _build_student_config.yml; \
	echo "Open _build/student/_build/html/index.html"

test: $(STAMP)
	@total=$$SECONDS; \
	$(MAKE) --no-print-directory unit notebooks book-check assignments; \
	echo "[phase] make test total (after install): $$((SECONDS - total)) s"

unit: $(STAMP)
	@start=$$SECONDS; \
	OMP_NUM_THREADS=1 PHBOOK_PROFILE=quick $(BIN)/python -m pytest tests \
		-n $(WORKERS) --dist loadfile -q; rc=$$?; \
	echo "[phase] unit tests: $$((SECONDS - start)) s"; exit $$rc

notebooks: $(STAMP)
	@start=$$SECONDS; \
	OMP_NUM_THREADS=1 PHBOOK_PROFILE=quick $(BIN)/python -m pytest \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
		-n $(WORKERS) --dist loadfile -q -p no:cacheprovider book/*.ipynb; rc=$$?; \
	echo "[phase] notebooks (nbval, quick): $$((SECONDS - start)) s"; exit $$rc

# A build with execution off: a broken table of contents, cross-reference,
# citation or directive fails the tests.
book-check: $(STAMP)
	@start=$$SECONDS; \
	mkdir -p _build/check; \
	sed -e 's/^\(\s*execute_notebooks:\).*/\1 "off"/' _config.yml \
		> _build/check/_config.yml; \
	$(BIN)/jupyter-book build . -W --keep-going -q --all \
		--config _build/check/_config.yml --path-output _build/check; rc=$$?; \
	echo "[phase] book check (no execution): $$((SECONDS - start)) s"; exit $$rc

# Every chapter's graded exercises -> otter-grader assignments: student notebooks
# (solutions and hidden tests removed), autograder zips and an instructor README;
# fails unless every solution passes and every blank question fails its hidden tests.
assignments: $(STAMP)
	@start=$$SECONDS; mkdir -p _build; \
	OMP_NUM_THREADS=1 PHBOOK_PROFILE=quick $(BIN)/python -m assignments \
		--out _build/assignments > _build/assignments.log 2>&1 \
		|| { rc=$$?; tail -40 _build/assignments.log; exit $$rc; }; \
	head -n -1 _build/assignments.log | grep -v "^WARNING" || true; \
	echo "[phase] assignments (build + grading checks): $$((SECONDS - start)) s"; \
	tail -n 1 _build/assignments.log

bench: $(STAMP)
	@for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f; done

format: $(STAMP)
	$(BIN)/ruff format phbook tests bench book
	$(BIN)/ruff check --fix phbook tests bench book

lint: $(STAMP)
	$(BIN)/ruff check phbook tests bench book

clean:
	rm -rf _build .pytest_cache
