#!/usr/bin/env bash
# Installs what einat needs to build and test on Debian 12 (as root), then
# builds the BPF object. Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(npm make clang-19 clang-format-19 llvm-19 libbpf-dev libbpf1 libmnl0 libmnl-dev iproute2
  iputils-ping nftables tcpdump iperf3 bpftool procps traceroute ethtool curl nix-bin ca-certificates
  coturn stun-client iputils-clockdiff)

missing=()
command -v npm >/dev/null && APT_PKGS=("${APT_PKGS[@]:1}") # npm present (e.g. from nodejs.org)
if ! command -v dpkg-query >/dev/null; then
  # Not Debian (e.g. `nix develop`, which provides these tools): nothing to install here.
  echo "setup: no dpkg here: not installing apt packages (${APT_PKGS[*]} are expected on PATH)"
  APT_PKGS=()
fi
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # coturn's package starts and enables a system STUN/TURN service; the tests only need its
  # binaries (they run turnserver in their own namespaces). A policy-rc.d that refuses coturn
  # alone keeps it from starting during the install (unless the machine has a policy of its
  # own), and the unit it enabled is disabled.
  policy=/usr/sbin/policy-rc.d own=0
  if [[ ! -e $policy ]]; then
    trap 'rm -f "$policy"' EXIT
    printf '#!/bin/sh\ncase "$1" in coturn | coturn.service) exit 101 ;; esac\nexit 0\n' >"$policy"
    chmod +x "$policy"
    own=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if ((own)); then
    rm -f "$policy"
    trap - EXIT
  fi
  # (`systemctl disable` works on the unit files, also where systemd is not running.)
  if [[ " ${missing[*]} " == *" coturn "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --quiet coturn.service 2>/dev/null || true
  fi
else
  echo "setup: apt packages present"
fi

# Deno comes from npm into tools/deno (kept apart from the project's own
# node_modules, which deno manages for the npm imports in deno.json).
DENO=tools/deno/node_modules/deno/deno
want=$(sed -nE 's/.*"deno": *"([^"]+)".*/\1/p' tools/deno/package.json)
have=$([[ -x $DENO ]] && "$DENO" --version 2>/dev/null | sed -nE '1s/^deno ([^ ]+).*/\1/p' || true)
if [[ $have != "$want" ]]; then
  echo "setup: installing deno $want from npm${have:+ (have $have)}"
  # --include=dev: the pin is a devDependency, which NODE_ENV=production or omit=dev would skip.
  (cd tools/deno && npm install --include=dev --no-audit --no-fund --silent)
fi
"$DENO" --version | head -1
# npm imports of deno.json (smol-toml) into ./node_modules
"$DENO" install --quiet

make -s -C bpf
