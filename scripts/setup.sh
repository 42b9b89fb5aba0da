#!/usr/bin/env bash
# Installs what einat needs to build and test on Debian 12 (as root), then
# builds the BPF object. Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(clang-19 llvm-19 libbpf-dev libbpf1 libmnl0 libmnl-dev iproute2 iputils-ping
  nftables tcpdump iperf3 bpftool procps ca-certificates)

missing=()
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

DENO=node_modules/deno/deno
if [[ ! -x $DENO ]]; then
  echo "setup: installing deno from npm"
  [[ -f package.json ]] || { echo "setup: package.json missing" >&2; exit 1; }
  npm install --no-audit --no-fund --silent
fi
"$DENO" --version | head -1

make -s -C bpf
