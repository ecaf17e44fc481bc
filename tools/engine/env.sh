# Source me: `. tools/engine/env.sh` puts the engine that `make engine` built first on PATH and
# keeps all Pulumi state of this checkout inside .engine/ (git-ignored):
#   .engine/bin    pulumi, pulumi-language-python (our provider plugins are installed in
#                  .engine/home/plugins by `make engine`)
#   .engine/home   PULUMI_HOME (plugins, credentials, workspace settings)
#   .engine/state  the local file backend (PULUMI_BACKEND_URL=file://...)
# Works from bash and zsh, from any directory.
if [ -n "${BASH_SOURCE[0]:-}" ]; then
  _mac_engine_src="${BASH_SOURCE[0]}"
elif [ -n "${ZSH_VERSION:-}" ]; then
  # shellcheck disable=SC2296
  _mac_engine_src="${(%):-%x}"
else
  _mac_engine_src="$0"
fi
MAC_ROOT="$(cd "$(dirname "$_mac_engine_src")/../.." && pwd)"
unset _mac_engine_src
export MAC_ROOT
export MAC_ENGINE_DIR="$MAC_ROOT/.engine"
case ":$PATH:" in
  *":$MAC_ENGINE_DIR/bin:"*) ;;
  *) export PATH="$MAC_ENGINE_DIR/bin:$PATH" ;;
esac
export PULUMI_HOME="$MAC_ENGINE_DIR/home"
export PULUMI_BACKEND_URL="file://$MAC_ENGINE_DIR/state"
# Test stacks only: real sites set their own passphrase (or a secrets provider) before sourcing.
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-mac-test-stacks-not-secret}"
export PULUMI_SKIP_UPDATE_CHECK=true
# Nothing can be downloaded from these machines: fail fast instead of trying to fetch plugins.
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
