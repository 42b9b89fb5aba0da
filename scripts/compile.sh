#!/usr/bin/env bash
# Builds the single-file einat executable (`deno task compile`).
#
#   scripts/compile.sh [--target TRIPLE] [--output FILE] [--no-bpf] [--print-permissions]
#                      [--print-v8-flags]
#
# Steps: build the BPF objects (make -C bpf), copy the sources einat runs from into a
# staging folder (so neither tools/ nor node_modules/ get embedded), write the staged
# lib/build_info.ts (git describe, target), then `deno compile` with the BPF objects embedded
# (bytes imports) and the permissions baked in. For the host target the result is run once
# (`-v`) as a smoke test.
#
# Environment:
#   DENORT_BIN    the denort runtime to build on (same Deno version as the compiling deno, and
#                 built for the target). Without it deno downloads denort from dl.deno.land or
#                 takes it from its cache ($DENO_DIR/dl). The full `deno` binary does NOT work
#                 as DENORT_BIN: the result would behave as the plain deno CLI.
#   TARGET        like --target: x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu.
#   OUTPUT        like --output (default dist/einat, or dist/einat-TARGET for another target).
#   DENO          the deno to compile with (default: tools/deno's, else deno on PATH).
#   GIT_DESCRIBE  the version description to embed when there is no .git (Nix builds).
#   DENO_DIR      deno's cache; npm packages of deno.lock must be in it or downloadable.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# Deno 2.9 needs --allow-all for every read under /proc, /sys and /dev (einat reads
# /proc/self/status, /proc/self/ns/net, /proc/PID/cmdline, /sys/kernel/btf/vmlinux and
# /sys/class/net/IF/type), and --allow-ffi already hands libbpf, libmnl and libc everything a
# native library can do. Finer flags would be: --allow-ffi --allow-read
# --allow-write=/run/einat,/var/lib/einat,/sys/fs/bpf --allow-env=EINAT_*
# --allow-sys=networkInterfaces,osRelease --allow-run=ip, once those reads go through libc.
PERMISSIONS=(--allow-all)
# V8 flags baked into the executable, the same as the `start` task's (tests/lib/einat.ts).
V8_FLAGS=(--v8-flags=--no-maglev,--expose-gc)

die() {
  echo "compile: $*" >&2
  exit 1
}

target=${TARGET:-}
output=${OUTPUT:-}
build_bpf=1
while (($#)); do
  case $1 in
    --target) target=${2:?--target needs a value}; shift 2 ;;
    --target=*) target=${1#*=}; shift ;;
    --output | -o) output=${2:?--output needs a value}; shift 2 ;;
    --output=*) output=${1#*=}; shift ;;
    --no-bpf) build_bpf=0; shift ;;
    --print-permissions) echo "${PERMISSIONS[*]}"; exit 0 ;;
    --print-v8-flags) echo "${V8_FLAGS[*]}"; exit 0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

case $(uname -m) in
  x86_64) host=x86_64-unknown-linux-gnu ;;
  aarch64 | arm64) host=aarch64-unknown-linux-gnu ;;
  *) host=unknown ;;
esac
target=${target:-$host}
case $target in
  x86_64-unknown-linux-gnu) elf_machine=003e ;;
  aarch64-unknown-linux-gnu) elf_machine=00b7 ;;
  *) die "unsupported target $target (x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu)" ;;
esac
if [[ -z $output ]]; then
  if [[ $target == "$host" ]]; then output=dist/einat; else output=dist/einat-$target; fi
fi
[[ $output == /* ]] || output=$ROOT/$output

# The deno that compiles.
deno=${DENO:-}
if [[ -z $deno ]]; then
  for d in tools/deno/node_modules/deno/deno node_modules/deno/deno; do
    [[ -x $d ]] && { deno=$ROOT/$d; break; }
  done
  [[ -n $deno ]] || deno=$(command -v deno) || die "deno not found (run scripts/setup.sh or set DENO)"
fi
deno_version=$("$deno" --version | sed -n 's/^deno \([^ ]*\).*/\1/p')

# The runtime the executable is built on.
if [[ -n ${DENORT_BIN:-} ]]; then
  [[ -f $DENORT_BIN && -x $DENORT_BIN ]] || die "DENORT_BIN=$DENORT_BIN is not an executable file"
  machine=$(od -An -tx1 -j18 -N2 "$DENORT_BIN" | tr -d ' \n')
  machine=${machine:2:2}${machine:0:2}
  [[ $machine == "$elf_machine" ]] ||
    die "DENORT_BIN=$DENORT_BIN is not built for $target (ELF machine 0x$machine)"
  if [[ $target == "$host" ]] && "$DENORT_BIN" --version 2>/dev/null | grep -q '^typescript'; then
    die "DENORT_BIN=$DENORT_BIN is the full deno CLI, not denort: use denort $deno_version for $target"
  fi
  export DENORT_BIN
fi

if ((build_bpf)); then
  make -s -C bpf || die "building the BPF objects failed (needs clang and libbpf headers)"
fi
for o in einat einat_compat btf_query; do
  [[ -f bpf/$o.bpf.o ]] || die "bpf/$o.bpf.o is missing (build it with make -C bpf)"
done

describe=${GIT_DESCRIBE:-}
if [[ -z $describe ]] && git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
  describe=$(git -C "$ROOT" describe --tags --always --dirty 2>/dev/null || true)
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/einat-compile.XXXXXX")
trap 'rm -rf "$stage"' EXIT
cp main.ts deno.json "$stage/"
[[ -f deno.lock ]] && cp deno.lock "$stage/"
mkdir -p "$stage/bpf"
cp bpf/*.bpf.o "$stage/bpf/"
tar -C "$ROOT" --exclude='*_test.ts' -cf - lib | tar -C "$stage" -xf -
json() { printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"]/\\&/g')"; }
cat >"$stage/lib/build_info.ts" <<EOF
// Written by scripts/compile.sh for this build.
/** What the build knew about itself. */
export interface BuildInfo {
  describe: string;
  target: string;
  compiled: boolean;
}
/** This build's facts. */
export const BUILD_INFO: BuildInfo = { describe: $(json "$describe"), target: $(json "$target"), compiled: true };
EOF

mkdir -p "$(dirname "$output")"
log=$stage/compile.log
echo "compile: einat ${describe:-(no git describe)} for $target with deno $deno_version -> $output"
# --node-modules-dir=none: npm packages come from deno's cache and only those in deno.lock are
# embedded (a node_modules folder would be embedded whole).
if ! (cd "$stage" && NO_COLOR=1 "$deno" compile --quiet --node-modules-dir=none \
  --unstable-raw-imports "${PERMISSIONS[@]}" "${V8_FLAGS[@]}" --target "$target" --output "$output" main.ts) \
  >"$log" 2>&1; then
  if grep -qE 'Setting up base binary|denort|dl\.deno\.land' "$log"; then
    if [[ -n ${DENORT_BIN:-} ]]; then
      die "deno could not use DENORT_BIN=$DENORT_BIN: $(grep -m1 -E 'denort|error' "$log")"
    fi
    die "denort $deno_version for $target is not available: no DENORT_BIN and downloading it from dl.deno.land failed; set DENORT_BIN to a denort $deno_version binary for $target (denort-$target.zip of the Deno release, or nixpkgs' deno.denort)"
  fi
  cat "$log" >&2
  die "deno compile failed"
fi

if [[ $target == "$host" ]]; then
  version=$("$output" -v 2>&1) || die "the built $output does not run: $version"
  [[ $version == einat* ]] ||
    die "the built $output does not behave as einat (-v printed: ${version%%$'\n'*}); is DENORT_BIN the full deno CLI?"
  echo "compile: $version"
fi
echo "compile: wrote $output ($(du -h "$output" | cut -f1))"
