#!/usr/bin/env bash
# The same script as generar-compose.sh (the course's name), under an English name.
exec bash "$(dirname -- "$0")/generar-compose.sh" "$@"
