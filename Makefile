# Culprit: `make run` to try it, `make test` to check it. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-test.lock pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: setup run test lint lock clean bench

setup: $(STAMP)

$(STAMP):
	@bash .ci/ensure-python.sh "$(PYTHON)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-test.lock
	@rm -f $(VENV)/.installed-* && touch $@

# Embedded mode unless DATABASE_URL / CELERY_BROKER_URL say otherwise: SQLite under var/, filesystem broker.
run: setup
	@mkdir -p var
	@$(BIN)/python manage.py migrate --noinput -v0
	@$(BIN)/python manage.py bootstrap_demo --url http://$(HOST):$(PORT)/
	@$(BIN)/python manage.py sandbox_generate --project Demo --runs 40 --seed 1 --clean 4
	@$(BIN)/python manage.py evaluate --project Demo --method heuristic --reuse
	@$(BIN)/python manage.py distill_schemas --project Demo
	@$(BIN)/python manage.py auto_attribute --project Demo --mode failed
	@$(BIN)/python manage.py create_queue --project Demo --name "Check the demo's failed runs" --source search \
	  --gold yes --overlap 1 --owner demo --if-missing \
	  --instructions "Confirm or correct the heuristic's verdict: which agent broke the run, and at which step."
	@$(BIN)/python manage.py train_attributor --project Demo --name "Demo's own" --if-missing
	@echo "Starting the web server on http://$(HOST):$(PORT)/ and a Celery worker (Ctrl+C stops both)"
	@trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	  $(BIN)/celery -A config --quiet worker -B --loglevel=WARNING --concurrency=2 --without-mingle --without-gossip & worker=$$!; \
	  $(BIN)/python manage.py runserver $(HOST):$(PORT) --noreload

# The whole suite against real PostgreSQL and Redis (started or installed when they do not answer) and Chromium,
# after the linter (CI runs this target, so a lint finding fails CI).
test: setup lint
	@bash .ci/services.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@bash .ci/large-files.sh

# Two hashed locks with the same versions: requirements.lock (runtime: what the Docker image installs) and
# requirements-test.lock (runtime + tests: what `make` installs). Each is compiled within the previous test lock, so a
# re-lock moves nothing that pyproject.toml did not ask to move; delete requirements-test.lock to take new releases.
lock:
	$(BIN)/python -m pip install --quiet uv==0.13.8
	@touch requirements-test.lock
	$(BIN)/uv pip compile pyproject.toml --extra test --generate-hashes -c requirements-test.lock \
	  -o requirements-test.lock --python-version 3.11 --custom-compile-command "make lock"
	$(BIN)/uv pip compile pyproject.toml --generate-hashes -c requirements-test.lock -o requirements.lock \
	  --python-version 3.11 --custom-compile-command "make lock"

bench: setup
	@bash .ci/services.sh
	$(BIN)/python bench/import_speed.py
	$(BIN)/python bench/viewer_speed.py
	$(BIN)/python bench/ingest.py --steps 100000
	$(BIN)/python bench/otlp_ingest.py
	$(BIN)/python bench/export_speed.py --steps 100000
	$(BIN)/python bench/review_queue.py
	$(BIN)/python bench/llm_replay_cost.py --runs 200 --seed 1
	$(BIN)/python manage.py sandbox_benchmark --runs 200 --seed 1 --json
	$(BIN)/python manage.py sandbox_benchmark --version 2 --runs 200 --seed 1 --json
	$(BIN)/python bench/schema_retrieval.py
	$(BIN)/python bench/train_speed.py --traces 500
	$(BIN)/python bench/learning_curve.py
	$(BIN)/python bench/attribution_matrix.py
	$(BIN)/python bench/scale.py --traces 20000

clean:
	rm -rf $(VENV) var .pytest_cache
