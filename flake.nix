{
  description = "mad-ecosystem: a cellular monolith hosting a society of LLM agents";

  # Pinned by flake.lock (rev + narHash); `nix flake update` moves the pin.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in {
      # A hermetic development shell: Python 3.11, uv (which installs the locked
      # dependencies from uv.lock), and Redis for the distributed-bus tests.
      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = [ pkgs.python311 pkgs.uv pkgs.redis ];
          shellHook = ''
            export UV_PYTHON=${pkgs.python311}/bin/python3.11
            export UV_PYTHON_DOWNLOADS=never
          '';
        };
      });

      apps = forAll (pkgs: {
        default = {
          type = "app";
          program = toString (pkgs.writeShellScript "mad-ecosystem" ''
            export UV_PYTHON=${pkgs.python311}/bin/python3.11
            exec ${pkgs.uv}/bin/uv run python ecosystem.py "$@"
          '');
        };
      });
    };
}
