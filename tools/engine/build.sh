#!/usr/bin/env bash
# `make engine`: build the Pulumi engine pieces from Go modules into .engine/bin (git-ignored),
# set up PULUMI_HOME and the local file backend inside .engine, and record what each piece cost.
#
#   bash tools/engine/build.sh            build what is missing or out of date (idempotent)
#   MAC_ENGINE_FORCE=1 bash ...           rebuild everything
#
# Pieces and where they come from (versions pinned in tools/engine/go.mod / go.sum):
#   pulumi                  github.com/pulumi/pulumi/pkg/v3/cmd/pulumi v3.274.1
#   pulumi-language-python  ./cmd/pulumi-language-python (ours, on github.com/pulumi/pulumi/sdk/v3)
#   pulumi-resource-libvirt 0.5.4, pulumi-resource-command 1.2.1, pulumi-resource-random 4.21.4:
#     ours, ../../providers/cmd/pulumi-resource-* (one Go module, same sdk/v3 pin), built into
#     .engine/providers and installed into PULUMI_HOME with `pulumi plugin install --file` at the
#     versions the Python SDKs ask for (upstream's modules are not served: tools/engine/README.md).
#
# Every compile runs under `nice -n 19` (shared 2-core machines). Figures per piece go to
# .engine/report/<piece>.json: wall seconds, module cache growth, build cache growth, binary size.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ENGINE="$ROOT/.engine"
BIN="$ENGINE/bin"
REPORT="$ENGINE/report"
STAMPS="$ENGINE/stamps"
PROVIDERS_SRC="$ROOT/providers"
PROVIDERS_BIN="$ENGINE/providers"  # not on PATH: the CLI loads them from PULUMI_HOME/plugins
mkdir -p "$BIN" "$REPORT" "$STAMPS" "$ENGINE/home" "$ENGINE/state" "$PROVIDERS_BIN"

# shellcheck source=tools/engine/env.sh
. "$HERE/env.sh"

if ! command -v go >/dev/null 2>&1; then
  echo "make engine: no 'go' on PATH; install Go >= 1.26 (the pieces are built from Go modules)" >&2
  exit 1
fi
export GOFLAGS="${GOFLAGS:-} -mod=readonly"
export CGO_ENABLED=0
GOMODCACHE="$(go env GOMODCACHE)"
GOCACHE="$(go env GOCACHE)"

PULUMI_VERSION="v3.274.1"   # keep in step with go.mod (github.com/pulumi/pulumi/pkg/v3 and sdk/v3)

log() { printf 'make engine: %s\n' "$*" >&2; }

dir_bytes() { if [ -d "$1" ]; then du -sb "$1" 2>/dev/null | cut -f1; else echo 0; fi; }

# A stamp is the hash of everything a piece's binary depends on: the Go toolchain, go.mod/go.sum,
# our own sources and the build command. Same stamp + binary present = up to date.
stamp_of() {
  local piece="$1" moddir="$2"; shift 2
  {
    go version
    cat "$moddir/go.mod" "$moddir/go.sum"
    printf '%s\n' "$@"
    if [ "$moddir" = "$PROVIDERS_SRC" ]; then
      # the plugins share internal/ and schemas/: any source of the module counts
      (cd "$moddir" && find . -type f \( -name '*.go' -o -name '*.json' \) ! -name '*_test.go' \
        | LC_ALL=C sort | xargs sha256sum)
    elif [ -d "$moddir/cmd/$piece" ]; then
      find "$moddir/cmd/$piece" -type f | LC_ALL=C sort | xargs sha256sum
    fi
  } | sha256sum | cut -d' ' -f1
}

# build PIECE PACKAGE LDFLAGS [MODULE_DIR OUT_DIR]
build() {
  local piece="$1" pkg="$2" ldflags="$3" moddir="${4:-$HERE}" outdir="${5:-$BIN}"
  local out="$outdir/$piece" stamp
  stamp="$(stamp_of "$piece" "$moddir" "$pkg" "$ldflags")"
  if [ -z "${MAC_ENGINE_FORCE:-}" ] && [ -x "$out" ] && [ "$(cat "$STAMPS/$piece" 2>/dev/null)" = "$stamp" ]; then
    log "$piece: up to date ($out)"
    return 0
  fi
  log "$piece: building $pkg (nice -n 19) ..."
  local mod0 cache0 t0 t1
  mod0="$(dir_bytes "$GOMODCACHE")"; cache0="$(dir_bytes "$GOCACHE")"; t0="$(date +%s)"
  (cd "$moddir" && nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$out.tmp" "$pkg")
  mv -f "$out.tmp" "$out"
  t1="$(date +%s)"
  local mod1 cache1 size
  mod1="$(dir_bytes "$GOMODCACHE")"; cache1="$(dir_bytes "$GOCACHE")"; size="$(stat -c %s "$out")"
  printf '{"piece": "%s", "package": "%s", "seconds": %d, "module_cache_growth_bytes": %d, "build_cache_growth_bytes": %d, "binary_bytes": %d, "go": "%s", "built_at": "%s"}\n' \
    "$piece" "$pkg" "$((t1 - t0))" "$((mod1 - mod0))" "$((cache1 - cache0))" "$size" \
    "$(go env GOVERSION)" "$(date -u +%FT%TZ)" > "$REPORT/$piece.json"
  echo "$stamp" > "$STAMPS/$piece"
  log "$piece: built in $((t1 - t0)) s, $((size / 1048576)) MiB; modules +$(((mod1 - mod0) / 1048576)) MiB"
}

build pulumi github.com/pulumi/pulumi/pkg/v3/cmd/pulumi \
  "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION"
build pulumi-language-python ./cmd/pulumi-language-python \
  "-s -w -X main.Version=${PULUMI_VERSION#v}-mac"

# Our provider plugins, at the versions the Python SDKs announce in their pulumi-plugin.json.
for plugin in libvirt:0.5.4 command:1.2.1 random:4.21.4; do
  name="${plugin%%:*}" version="${plugin#*:}"
  rm -f "$BIN/pulumi-resource-$name"  # not on PATH: the CLI would warn and prefer it
  build "pulumi-resource-$name" "./cmd/pulumi-resource-$name" "-s -w" "$PROVIDERS_SRC" "$PROVIDERS_BIN"
  installed="$PULUMI_HOME/plugins/resource-$name-v$version/pulumi-resource-$name"
  if ! cmp -s "$PROVIDERS_BIN/pulumi-resource-$name" "$installed"; then
    "$BIN/pulumi" plugin install resource "$name" "$version" --reinstall \
      --file "$PROVIDERS_BIN/pulumi-resource-$name" >/dev/null
    log "pulumi-resource-$name: installed as resource plugin $name v$version in $PULUMI_HOME"
  fi
done

# Local file backend and CLI settings inside .engine (env.sh exported PULUMI_HOME/BACKEND_URL).
"$BIN/pulumi" login --non-interactive "$PULUMI_BACKEND_URL" >/dev/null
log "ready: $("$BIN/pulumi" version) at $BIN; PULUMI_HOME=$PULUMI_HOME; backend $PULUMI_BACKEND_URL"
log "use it: . tools/engine/env.sh"
