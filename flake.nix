{
  description = "einat: an eBPF endpoint-independent (full-cone) NAT daemon";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      gitDescribe = self.shortRev or self.dirtyShortRev or "";
    in
    {
      packages = forAllSystems (pkgs: {
        # clang 19: the BPF objects are built with -Werror and verified as clang 19 emits them.
        einat = pkgs.callPackage ./nix/package.nix {
          inherit gitDescribe;
          llvmPackages = pkgs.llvmPackages_19;
        };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.einat;
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nix/devshell.nix { llvmPackages = pkgs.llvmPackages_19; };
      });

      overlays.default = final: _prev: {
        einat = final.callPackage ./nix/package.nix {
          inherit gitDescribe;
          llvmPackages = final.llvmPackages_19;
        };
      };

      nixosModules.einat =
        { lib, pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.einat.package =
            lib.mkDefault
              self.packages.${pkgs.stdenv.hostPlatform.system}.einat;
        };
      nixosModules.default = self.nixosModules.einat;

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
