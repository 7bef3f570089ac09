#!/usr/bin/env bash
# The framework clients tests/test_clients.py drives against the gateway (LangChain's CohereRerank,
# LlamaIndex's CohereRerank postprocessor, Haystack's CohereRanker), in their own venv under
# ${RERANK_TOOLS:-<repo>/var/tools}/frameworks: langchain-cohere pins cohere<6 while the project tests with the
# Cohere SDK 7.3.1, and langchain-core, llama-index-core and haystack-ai have no business next to vLLM.
# Re-running is cheap: a venv that already holds exactly these pins is kept.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RERANK_TOOLS:-$ROOT/var/tools}/frameworks"
PACKAGES=(
  "langchain-cohere==0.6.0"
  "llama-index-postprocessor-cohere-rerank==0.10.0"
  "cohere-haystack==11.0.0"
  # what those resolve to today, pinned so that a new release cannot change the test under us
  "cohere==5.21.1"
  "langchain-core==1.8.3"
  "llama-index-core==0.14.25"
  "haystack-ai==3.4.1"
)
stamp="$VENV/.installed"

if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${PACKAGES[*]}" ]; then
  exit 0
fi
echo "install-frameworks: installing ${PACKAGES[*]} into $VENV" >&2
rm -f "$stamp"
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}"
"$VENV/bin/python" -c "import langchain_cohere, llama_index.postprocessor.cohere_rerank, haystack_integrations.components.rankers.cohere" \
  || { echo "install-frameworks: the framework packages do not import" >&2; exit 1; }
printf '%s' "${PACKAGES[*]}" > "$stamp"
