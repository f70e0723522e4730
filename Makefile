# Every command CI and the README use. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(CURDIR)/$(VENV)/bin/python
# The services import the shared package from the repository root.
export PYTHONPATH := $(CURDIR)
# The commands that run a service read .env (see .env.example) when there is one; its values
# win over the shell's. The tests never read it: they make their own database and vhost.
LOAD_ENV := set -a; [ ! -f $(CURDIR)/.env ] || . $(CURDIR)/.env; set +a;
# Every worker on one host needs a health port of its own (WORKER_HEALTH_PORT, 0: a free one):
# one given to make wins over .env's, as in `make worker WORKER_HEALTH_PORT=8002`.
HEALTH_PORT_GIVEN = $(if $(filter command line,$(origin WORKER_HEALTH_PORT)),export WORKER_HEALTH_PORT=$(WORKER_HEALTH_PORT);)
# `make run WORKERS=3`: workers on WORKER_HEALTH_PORT (8001 unless .env says) and the ports after it.
WORKERS ?= 1

.PHONY: help install lock api worker webhook-sender webhook-secret api-key run redrive chaos chaos-short openapi migrate db smoke screenshots test test-cluster test-unit test-integration lint format clean bench bench-smoke fuzz scale

help: ## List the commands
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv with both services' requirements and the dev tools

# The lock files, made from the *.in files beside them by `make lock`: every package pinned, with
# its hashes. The dev lock is all of .venv; the others pin a part of it, at the same versions.
DEV_LOCK := requirements-dev.txt
PART_LOCKS := api-service/requirements.txt worker-service/requirements.txt requirements-test.txt
# `make lock` makes the versions agree; this catches a lock edited by hand, before .venv tests
# other versions than an image would run.
CHECK_LOCKS := pins() { grep -oE '^[a-z0-9._-]+==[^ ;]+' "$$1" | sort; }; \
	for lock in $(PART_LOCKS); do \
		other=$$(comm -23 <(pins $$lock) <(pins $(DEV_LOCK))); \
		[ -z "$$other" ] || { echo "$$lock pins what $(DEV_LOCK) does not: $$other" >&2; exit 1; }; \
	done

# --clear, so that a package dropped from the lock leaves .venv too. The dev lock pins pip itself.
$(VENV)/.installed: $(DEV_LOCK) $(PART_LOCKS)
	@$(CHECK_LOCKS)
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	touch $@

# One universal resolution for Python 3.11 and newer (3.11 here, python:3.12-slim in the images).
# The dev lock is solved from every *.in; the others take its versions as constraints. uv keeps
# the versions a lock already has; to move a transitive package on:
#   make lock ARGS='--upgrade-package NAME'   (ARGS=--upgrade: all of them)
UV_COMPILE = $(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes $(ARGS)

# uv rewrites a lock even when nothing in it changed; then .venv still matches, so the stamp is
# renewed and the next command does not reinstall.
lock: install ## Regenerate the lock files from the *.in files
	@sha256sum $(DEV_LOCK) $(PART_LOCKS) > $(VENV)/.locks.sha256
	$(UV_COMPILE) api-service/requirements.in worker-service/requirements.in requirements-dev.in \
		-o $(DEV_LOCK)
	$(UV_COMPILE) api-service/requirements.in -c $(DEV_LOCK) -o api-service/requirements.txt
	$(UV_COMPILE) worker-service/requirements.in -c $(DEV_LOCK) -o worker-service/requirements.txt
	$(UV_COMPILE) requirements-test.in -c $(DEV_LOCK) -o requirements-test.txt
	@$(CHECK_LOCKS)
	@! sha256sum --status -c $(VENV)/.locks.sha256 || touch $(VENV)/.installed

api: install ## Run the API in the foreground (configured by environment variables)
	$(LOAD_ENV) cd api-service/src && exec $(PY) main.py

worker: install ## Run the worker in the foreground (WORKER_HEALTH_PORT=N: its health port)
	$(LOAD_ENV) $(HEALTH_PORT_GIVEN) cd worker-service/src && exec $(PY) main.py

webhook-sender: install ## Run the webhook sender in the foreground (needs WEBHOOK_SECRET)
	$(LOAD_ENV) cd api-service/src && exec $(PY) sender.py

# Standard library only, and no `install` first: `make webhook-secret >> .env` appends one line.
webhook-secret: ## Print a new WEBHOOK_SECRET (whsec_ and 32 random bytes in base64)
	@$(PYTHON) -c 'import base64, secrets; print("WEBHOOK_SECRET=whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())'

# Standard library only, and no `install` first (common/api_keys.py imports nothing else).
api-key: ## Print a new API key for NAME=... and the API_KEYS pair (name:sha256) that admits it
	@test -n "$(NAME)" || { echo "make api-key NAME=<tenant>: NAME is 1-64 of A-Z a-z 0-9 _ . -" >&2; exit 2; }
	@PYTHONPATH=. $(PYTHON) -c 'import sys; from common.api_keys import main; main(sys.argv[1])' '$(NAME)'

run: install ## Run the API, WORKERS workers (1) and (with WEBHOOK_SECRET set) the webhook sender; Ctrl-C stops them
	@trap 'kill 0' INT TERM; $(LOAD_ENV) $(HEALTH_PORT_GIVEN) $(MAKE) --no-print-directory api & \
		port=$${WORKER_HEALTH_PORT:-8001}; for n in $$(seq 0 $$(( $(WORKERS) - 1 ))); do \
			$(MAKE) --no-print-directory worker WORKER_HEALTH_PORT=$$(( port ? port + n : 0 )) & done; \
		if [ -n "$$WEBHOOK_SECRET" ]; then $(MAKE) --no-print-directory webhook-sender & \
		else echo "run: WEBHOOK_SECRET is not set: no webhook sender (make webhook-secret)"; fi; wait

redrive: install ## Move dead-lettered task messages back to the work queue
	$(LOAD_ENV) cd worker-service/src && $(PY) redrive.py

chaos: install ## Fault-injection run, N=2,000 (ARGS=--write-docs puts the table in docs/reliability.md)
	$(PY) -m chaos $(ARGS)

chaos-short: install ## The same with N=200 (CI runs it)
	$(PY) -m chaos --short $(ARGS)

openapi: install ## Write the API's OpenAPI document to docs/openapi.json
	cd api-service/src && $(PY) export_openapi.py

migrate: install ## Bring the database in DATABASE_URL to the newest schema (db/migrations)
	$(LOAD_ENV) $(PY) -m alembic -c db/alembic.ini upgrade head

db: install ## Create the database in DATABASE_URL if missing, then migrate it
	$(LOAD_ENV) $(PY) -m common.mysql.schema
	@$(MAKE) --no-print-directory migrate

# The three suites against the configured MariaDB/MySQL and RabbitMQ; where one does not answer
# and Docker does, against Compose's own, started for the run and removed after it (README, Testing).
test: install ## Unit, integration and end-to-end tests (a scratch database and vhost of their own)
	$(PY) -m testkit.backends -- $(SHELL) -ec \
		'(cd api-service && $(PY) -m pytest); (cd worker-service && $(PY) -m pytest); $(PY) -m pytest'

# Three RabbitMQ nodes of the test's own beside the local one (testkit/rabbit_cluster.py): the
# node both services use is stopped, then killed, under load (needs rabbitmq-server, as root).
test-cluster: install ## Broker failover against a real 3-node RabbitMQ cluster (~1 min; CI runs it)
	$(PY) -m pytest -m cluster tests/test_broker_failover.py

smoke: install ## Both services run as their Dockerfiles' CMDs run them, one task to COMPLETED
	$(PY) -m pytest tests/test_smoke.py

# The browser tests' screenshot test, with its pictures kept (other runs write them to a
# temporary directory); it needs Debian's Chromium, as tests/browser does.
screenshots: install ## Write docs/images/dashboard-{desktop,mobile}.png from a browser test run
	SCREENSHOTS_DIR=$(CURDIR)/docs/images $(PY) -m pytest -q tests/browser/test_dashboard_screenshots.py

test-unit: install ## Only the tests that need no services
	cd api-service && $(PY) -m pytest -m unit
	cd worker-service && $(PY) -m pytest -m unit
	$(PY) -m pytest -m unit

# The monitoring profile's Prometheus files, checked by Prometheus's own tool (Debian: apt-get
# install prometheus; .ci/run installs it).
PROMTOOL ?= promtool
PROMETHEUS_DIR := monitoring/prometheus

lint: install ## ruff, mypy (strict), the Compose file's schema, hadolint, bandit, the monitoring profile (promtool, dashboard), the Kubernetes manifests
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	cd api-service && MYPYPATH=src:.. $(PY) -m mypy --config-file ../pyproject.toml src tests
	cd worker-service && MYPYPATH=src:.. $(PY) -m mypy --config-file ../pyproject.toml src tests
	$(PY) -m mypy common testkit tests chaos bench db/migrations --exclude 'testkit/handlers\.py'  # checked with the worker's tests, which import it
	$(PY) -m check_jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	$(VENV)/bin/hadolint api-service/Dockerfile worker-service/Dockerfile
	@# Security findings of medium or high severity fail; each one explained stays, marked
	@# `# nosec <id>` with its reason on the line (README, Security).
	$(PY) -m bandit -q -r common api-service/src worker-service/src --severity-level medium
	@command -v $(PROMTOOL) >/dev/null || { echo "lint: $(PROMTOOL) not found: apt-get install prometheus (or PROMTOOL=/path/to/promtool)" >&2; exit 1; }
	$(PROMTOOL) check config $(PROMETHEUS_DIR)/prometheus.yml
	$(PROMTOOL) check rules $(PROMETHEUS_DIR)/alerts.yml
	$(PROMTOOL) test rules $(PROMETHEUS_DIR)/alerts_test.yml
	$(PY) -m pytest -q -p no:cacheprovider tests/test_monitoring_config.py  # the dashboard and provisioning
	@$(MAKE) --no-print-directory k8s-check

# The Kubernetes manifests (deploy/k8s, docs/kubernetes.md) as `kubectl apply -k` would send them,
# checked without a cluster or a network: the built-in kinds against Kubernetes K8S_VERSION's own
# schemas, which kubernetes-validate ships, and the ScaledObject against KEDA's, vendored in
# deploy/k8s/schemas. Any kubectl of 1.21 or later (its kustomize writes one file per object).
K8S_VERSION ?= 1.32.0
K8S_KUSTOMIZATIONS := deploy/k8s/base deploy/k8s/overlays/dev
.PHONY: k8s-check
k8s-check: install ## The Kubernetes manifests (base, dev overlay) against the Kubernetes and KEDA schemas
	@command -v kubectl >/dev/null || { echo "k8s-check: kubectl not found: install kubectl 1.21 or later (Debian 12's kubernetes-client is 1.20, too old)" >&2; exit 1; }
	@kubectl kustomize --help | grep -q -- '--output' || { echo "k8s-check: this kubectl's kustomize is too old: kubectl 1.21 or later" >&2; exit 1; }
	@# One file per object, named group_version_kind_name.yaml. KEDA's (keda.sh_*) go to its
	@# schema, whose pinned kind fails any KEDA object but a ScaledObject.
	@rendered=$$(mktemp -d); trap 'rm -rf "$$rendered"' EXIT; set -e; \
	for dir in $(K8S_KUSTOMIZATIONS); do \
		out=$$rendered/$${dir//\//_}; mkdir "$$out"; \
		echo "kubectl kustomize $$dir"; kubectl kustomize "$$dir" -o "$$out"; \
		(cd "$$out" && $(PY) -m kubernetes_validate --strict -k $(K8S_VERSION) $$(ls *.yaml | grep -v '^keda\.sh_')); \
		echo "check-jsonschema $$(cd "$$out" && echo keda.sh_*.yaml)"; \
		$(PY) -m check_jsonschema --schemafile deploy/k8s/schemas/scaledobject_v1alpha1.json "$$out"/keda.sh_*.yaml; \
	done

format: install ## Apply ruff's fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean: ## Remove .venv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache */.pytest_cache

bench: install ## Benchmark the services against their targets (~12 min); writes docs/benchmarks.md
	$(PY) -m bench

bench-smoke: install ## The benchmark suite's code path, a few seconds per measurement (CI runs it)
	$(PY) -m bench --smoke
	$(PY) -m bench.scale --smoke

scale: install ## 1-3 API and 1-4 worker processes on this machine: the throughput curve (~4 min; docs/scaling.md)
	$(PY) -m bench.scale

fuzz: install ## Schemathesis against a running API and worker, keys off and on (~4 min; CI runs it)
	$(PY) -m pytest -m fuzz tests/test_schemathesis.py
