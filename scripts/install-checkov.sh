#!/usr/bin/env bash
# checkov for the chart tests, in its own venv under ${RERANK_TOOLS:-<repo>/var/tools}/checkov: it pins
# packaging<24, networkx<2.7 and boto3, which must not reach the environment vLLM and torch run in.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RERANK_TOOLS:-$ROOT/var/tools}/checkov"
VERSION="3.3.30"

if [ "$("$VENV/bin/checkov" --version 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
echo "install-checkov: installing checkov $VERSION into $VENV" >&2
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$VERSION"
