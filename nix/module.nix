# NixOS module: services.einat.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:

let
  cfg = config.services.einat;
  settingsFormat = pkgs.formats.toml { };
  configFile =
    if cfg.configFile != null then cfg.configFile else settingsFormat.generate "einat.toml" cfg.config;
  # A generated configuration is linked at /etc/einat/config.toml; a given file is read where it
  # is (linking a file that already lives at /etc/einat/config.toml would make a symlink loop).
  configPath = if cfg.configFile != null then toString cfg.configFile else "/etc/einat/config.toml";
  # Least set, measured in a network namespace: CAP_BPF and CAP_PERFMON to load the
  # programs (the verifier needs CAP_PERFMON for packet pointer arithmetic), CAP_NET_ADMIN
  # to attach them. See docs/packaging.md.
  capabilities = [
    "CAP_BPF"
    "CAP_NET_ADMIN"
    "CAP_PERFMON"
  ];
in
{
  options.services.einat = {
    enable = lib.mkEnableOption "einat, an eBPF endpoint-independent (full-cone) NAT";

    package = lib.mkPackageOption pkgs "einat" { };

    configFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = "/etc/einat/config.toml";
      description = ''
        An einat TOML configuration file, read where it is. Exactly one of `configFile` and
        `config` is set. A file outside the Nix store is not watched: after changing it, run
        `systemctl reload einat` (SIGHUP).
      '';
    };

    config = lib.mkOption {
      type = settingsFormat.type;
      default = { };
      example = lib.literalExpression ''
        {
          interfaces = [ { if_name = "wan0"; nat44 = true; } ];
        }
      '';
      description = ''
        einat's configuration as an attribute set, written out as TOML
        (see config.sample.toml for the keys).
      '';
    };

    extraArgs = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [
        "--log"
        "debug"
      ];
      description = "Extra command-line arguments of einat.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = (cfg.configFile != null) != (cfg.config != { });
        message = "services.einat: set exactly one of configFile and config.";
      }
    ];

    environment.etc."einat/config.toml" = lib.mkIf (cfg.configFile == null) { source = configFile; };

    systemd.services.einat = {
      description = "einat eBPF full-cone NAT";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # A changed configuration is applied by SIGHUP, without dropping the NAT state.
      reloadTriggers = [ configFile ];
      serviceConfig = {
        # READY=1 once every interface is served (lib/notify.ts).
        Type = "notify";
        ExecStart = utils.escapeSystemdExecArgs (
          [
            (lib.getExe cfg.package)
            "-c"
            configPath
          ]
          ++ cfg.extraArgs
        );
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        Restart = "on-failure";
        RestartSec = "5s";
        # Exit 2 is a configuration or start-up error: restarting would not mend it.
        RestartPreventExitStatus = 2;

        CapabilityBoundingSet = capabilities;
        AmbientCapabilities = capabilities;
        NoNewPrivileges = true;
        LimitMEMLOCK = "infinity";

        # Kept across restarts: ownership files in /run/einat, state in /var/lib/einat,
        # pinned objects on bpffs.
        RuntimeDirectory = "einat";
        RuntimeDirectoryPreserve = true;
        StateDirectory = "einat";

        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        ProtectControlGroups = true;
        ProtectKernelModules = true;
        ProtectClock = true;
        ProtectHostname = true;
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_NETLINK"
          "AF_INET"
          "AF_INET6"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        SystemCallArchitectures = "native";
        # No MemoryDenyWriteExecute: the V8 JIT needs it off.
      };
    };
  };
}
