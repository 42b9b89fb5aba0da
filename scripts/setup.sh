#!/usr/bin/env bash
# Installs what einat needs to build and test on Debian 12 (as root), then
# builds the BPF object. Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(npm clang-19 clang-format-19 llvm-19 libbpf-dev libbpf1 libmnl0 libmnl-dev iproute2 iputils-ping
  nftables tcpdump iperf3 bpftool procps traceroute ethtool nix-bin ca-certificates)

missing=()
command -v npm >/dev/null && APT_PKGS=("${APT_PKGS[@]:1}") # npm present (e.g. from nodejs.org)
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: apt packages present"
fi

# Deno comes from npm into tools/deno (kept apart from the project's own
# node_modules, which deno manages for the npm imports in deno.json).
DENO=tools/deno/node_modules/deno/deno
if [[ ! -x $DENO ]]; then
  echo "setup: installing deno from npm"
  (cd tools/deno && npm install --no-audit --no-fund --silent)
fi
"$DENO" --version | head -1
# npm imports of deno.json (smol-toml) into ./node_modules
"$DENO" install --quiet

make -s -C bpf
