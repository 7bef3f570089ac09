#!/usr/bin/env bash
# The Cohere TypeScript SDK (npm cohere-ai 8.1.0) for tests/test_clients.py, and TypeScript 5.9.3 with
# @types/node 20 to type-check the README's TypeScript snippet (tests/test_readme.py), all run with the system's
# node (Debian's nodejs, scripts/system-deps.sh). Installed with `npm ci` from tests/clients/node/package-lock.json,
# every package pinned by its integrity hash, into ${RERANK_TOOLS:-<repo>/var/tools}/node. Re-running is cheap:
# an install made from the same lockfile is kept.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SOURCE="$ROOT/tests/clients/node"
DEST="${RERANK_TOOLS:-$ROOT/var/tools}/node"
NODE_MAJOR_MIN=18  # cohere-ai 8's engines field
stamp="$DEST/.installed-from.json"  # the lockfile the finished install was made from

die() { printf 'install-node-clients: %s\n' "$*" >&2; exit 1; }

for command in node npm; do
  command -v "$command" >/dev/null 2>&1 || die "'$command' is missing: scripts/system-deps.sh installs nodejs and npm"
done
major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge "$NODE_MAJOR_MIN" ] || die "node $(node --version) is too old: cohere-ai needs $NODE_MAJOR_MIN or newer"

if [ -d "$DEST/node_modules/cohere-ai" ] && cmp -s "$SOURCE/package-lock.json" "$stamp"; then
  exit 0
fi
echo "install-node-clients: installing cohere-ai, typescript, @types/node from $SOURCE/package-lock.json into $DEST" >&2
rm -f "$stamp"
mkdir -p "$DEST"
cp "$SOURCE/package.json" "$SOURCE/package-lock.json" "$DEST/"
(cd "$DEST" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
(cd "$DEST" && node -e 'require("cohere-ai")') || die "cohere-ai does not load"
cp "$SOURCE/package-lock.json" "$stamp"
