# einat as one `deno compile` executable: the BPF objects are built with clang and embedded,
# the runtime is nixpkgs' denort (DENORT_BIN), the npm packages come from deno.lock, and a
# wrapper points einat at libbpf and libmnl in the store (EINAT_LIBBPF, EINAT_LIBMNL).
{
  lib,
  stdenv,
  fetchurl,
  deno,
  denort ? null,
  llvmPackages,
  libbpf,
  libmnl,
  linuxHeaders,
  makeBinaryWrapper,
  gitDescribe ? "",
}:

let
  denoJson = lib.importJSON ../deno.json;
  denoLock = lib.importJSON ../deno.lock;

  # nixpkgs keeps denort as an output of deno (newer) or as its own package (older).
  denortBin =
    if deno ? denort then
      "${deno.denort}/bin/denort"
    else if denort != null then
      lib.getExe denort
    else
      throw "einat: this nixpkgs has neither deno.denort nor a denort package";

  # "name@version" keys of deno.lock's npm section, fetched by their integrity hash.
  npmTarball =
    key: entry:
    let
      m = builtins.match "(@?[^@]+)@([^_]+).*" key;
      name = builtins.elemAt m 0;
      version = builtins.elemAt m 1;
    in
    {
      inherit name version;
      src = fetchurl {
        url = "https://registry.npmjs.org/${name}/-/${baseNameOf name}-${version}.tgz";
        hash = entry.integrity;
      };
    };
  npmDeps = lib.mapAttrsToList npmTarball (denoLock.npm or { });
in
stdenv.mkDerivation {
  pname = "einat";
  version = denoJson.version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../main.ts
      ../deno.json
      ../deno.lock
      ../lib
      ../bpf
      ../scripts/compile.sh
    ];
  };

  nativeBuildInputs = [
    deno
    llvmPackages.clang
    llvmPackages.llvm # llvm-strip: the objects' DWARF goes (bpf/Makefile)
    makeBinaryWrapper
  ];
  buildInputs = [
    libbpf
    linuxHeaders
  ];

  # The cc-wrapper's hardening flags are not valid for the BPF target.
  hardeningDisable = [ "all" ];
  # deno compile appends the program to the executable: stripping or patchelf breaks it.
  dontStrip = true;
  dontPatchELF = true;

  env = {
    DENORT_BIN = denortBin;
    GIT_DESCRIBE = gitDescribe;
  };

  configurePhase = ''
    runHook preConfigure
    export HOME=$TMPDIR DENO_DIR=$TMPDIR/deno DENO_NO_UPDATE_CHECK=1
    ${lib.concatMapStrings (d: ''
      mkdir -p "$DENO_DIR/npm/registry.npmjs.org/${d.name}/${d.version}"
      tar -xzf ${d.src} --strip-components=1 \
        -C "$DENO_DIR/npm/registry.npmjs.org/${d.name}/${d.version}"
    '') npmDeps}
    runHook postConfigure
  '';

  buildPhase = ''
    runHook preBuild
    make -s -C bpf CLANG=clang ARCH_INC=${linuxHeaders}/include
    bash scripts/compile.sh --no-bpf --output einat
    runHook postBuild
  '';

  installPhase = ''
    runHook preInstall
    install -Dm755 einat -t $out/bin
    # dlopen finds the libraries in the store through these (see lib/deps.ts).
    wrapProgram $out/bin/einat \
      --set-default EINAT_LIBBPF ${lib.getLib libbpf}/lib/libbpf.so.1 \
      --set-default EINAT_LIBMNL ${lib.getLib libmnl}/lib/libmnl.so.0
    runHook postInstall
  '';

  meta = {
    description = "eBPF-based endpoint-independent (full-cone) NAT";
    homepage = "https://github.com/EHfive/einat-ebpf";
    # The BPF programs call GPL-only helpers and are GPL-2.0-or-later.
    license = lib.licenses.gpl2Plus;
    mainProgram = "einat";
    platforms = [
      "x86_64-linux"
      "aarch64-linux"
    ];
  };
}
