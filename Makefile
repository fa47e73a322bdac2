# The original exercise's targets. Uses `docker compose` (v2) when present, else docker-compose.
SHELL := /bin/bash
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_FILE ?= docker-compose.yaml
GRACE ?= 10
# The legacy builder never pulls an image (this project builds on local base images).
export DOCKER_BUILDKIT ?= 0

.PHONY: docker-image docker-compose-up docker-compose-down docker-compose-logs

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
