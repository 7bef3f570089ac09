#!/usr/bin/env bash
# Debian packages the test suite talks to (or looks at) for real. Installs what is missing (root or sudo
# needed then).
set -euo pipefail

declare -A wanted=(
  [redis-server]=redis-server  # shared rate-limit store
  [git-lfs]=git-lfs            # model_setup fetch
  [wrk]=wrk                    # HTTP benchmarks
  [npm]=npm                    # the pinned Helm binary and the Cohere TypeScript SDK (scripts/install-*.sh)
  [node]=nodejs                # runs the Cohere TypeScript SDK against the gateway (tests/test_clients.py)
  [curl]=curl                  # the chart's NOTES curl call is run as printed
  [chromium]=chromium          # the demo page's browser tests (Playwright drives it; no browser download)
  [prometheus]=prometheus      # scrapes the gateway's metrics port in tests/test_metrics.py
  [promtool]=prometheus        # lints a scrape (same package)
  [buildah]=buildah            # builds the image (scripts/image.sh, tests/test_image.py)
  [podman]=podman              # runs it, and the chart's pod (podman kube play)
  [runc]=runc                  # the OCI runtime scripts/podman/containers.conf names (crun refuses some hosts)
  [debootstrap]=debootstrap    # the CPU flavour's Debian base, made offline
)
fonts=(fonts-noto-cjk)         # Chinese text in the page's screenshot renders as text, not boxes
missing=()
for command in "${!wanted[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${wanted[$command]}")
done
for package in "${fonts[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${missing[*]} and no apt-get to install them; install them and re-run" >&2
  exit 1
fi
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "system-deps: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
