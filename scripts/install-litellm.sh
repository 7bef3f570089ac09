#!/usr/bin/env bash
# LiteLLM's proxy, the peer the gateway is benchmarked against (benchmarks/litellm_peer.py), in its own
# venv under ${RERANK_TOOLS:-<repo>/var/tools}/litellm: its proxy extra pins fastapi, uvicorn, pydantic and
# friends, which must not reach the environment the gateway, vLLM and torch run in. Newer releases need
# packages that PyPI does not serve.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RERANK_TOOLS:-$ROOT/var/tools}/litellm"
VERSION="1.108.7"

# importlib.metadata, not `litellm --version`: the CLI imports the whole proxy, which takes seconds.
if [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
echo "install-litellm: installing litellm[proxy] $VERSION into $VENV" >&2
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "litellm[proxy]==$VERSION"
