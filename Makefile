# The original exercise's targets. Compose: `docker compose` (v2) when present, else
# docker-compose (v1). The file: docker-compose-dev.yaml when it exists (the course's
# workflow generates it: ./generar-compose.sh docker-compose-dev.yaml N), else
# docker-compose.yaml; COMPOSE_FILE=... picks another.
# The images build with whatever builder Docker uses by default. Without a container registry
# (an offline machine with local base images), build with the legacy builder, which never asks
# one: DOCKER_BUILDKIT=0 make docker-compose-up.
SHELL := /bin/bash
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_FILE ?= $(if $(wildcard docker-compose-dev.yaml),docker-compose-dev.yaml,docker-compose.yaml)
GRACE ?= 10

default: build

.PHONY: default deps build docker-image docker-compose-up docker-compose-down docker-compose-logs

deps:
	cargo fetch --locked

build: deps
	cargo build --release --locked

docker-image:
	docker build -f Dockerfile.server -t lottery-server .
	docker build -f Dockerfile.client -t lottery-client .

docker-compose-up: docker-image
	$(COMPOSE) -f $(COMPOSE_FILE) up -d

docker-compose-down:
	$(COMPOSE) -f $(COMPOSE_FILE) stop -t $(GRACE)
	$(COMPOSE) -f $(COMPOSE_FILE) down

docker-compose-logs:
	$(COMPOSE) -f $(COMPOSE_FILE) logs -f
