# `nix develop`: everything to build the BPF objects, run einat from the checkout
# (`deno task start`), run the tests (`bash scripts/test.sh`: its set-up installs nothing
# outside Debian) and compile it.
{
  mkShell,
  deno,
  denort ? null,
  llvmPackages,
  libbpf,
  libmnl,
  bpftools,
  iproute2,
  nftables,
  linuxHeaders,
  lib,
  gnumake,
  tcpdump,
  traceroute,
  ethtool,
  iperf3,
  curl,
  iputils,
  util-linux,
  coturn,
  stun,
}:

let
  # The runtime `deno compile` builds on (scripts/compile.sh honours DENORT_BIN).
  denortBin =
    if deno ? denort then
      "${deno.denort}/bin/denort"
    else if denort != null then
      lib.getExe denort
    else
      null;
in
mkShell {
  packages = [
    deno
    llvmPackages.clang
    llvmPackages.llvm
    llvmPackages.clang-tools # clang-format
    gnumake
    bpftools
    iproute2
    nftables
    tcpdump
    traceroute
    ethtool
    iperf3
    curl
    iputils
    util-linux # setpriv, nsenter, mount
    coturn # turnserver, turnutils_natdiscovery (tests/stun_test.ts)
    stun # the classic RFC 3489 client
  ];
  buildInputs = [
    libbpf
    libmnl
    linuxHeaders
  ];
  # The cc-wrapper's hardening flags are not valid for the BPF target.
  hardeningDisable = [ "all" ];
  env = {
    ARCH_INC = "${linuxHeaders}/include";
    EINAT_LIBBPF = "${lib.getLib libbpf}/lib/libbpf.so.1";
    EINAT_LIBMNL = "${lib.getLib libmnl}/lib/libmnl.so.0";
  }
  // lib.optionalAttrs (denortBin != null) { DENORT_BIN = denortBin; };
}
