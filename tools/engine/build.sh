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
#   pulumi-resource-libvirt, pulumi-resource-command, pulumi-resource-random: NOT buildable here,
#     their modules are not served by the Go module proxy (see probe_missing below and
#     tools/engine/README.md). The script records why in .engine/missing/<piece>.txt, which the
#     engine tests read to skip with that reason.
#
# Every compile runs under `nice -n 19` (shared 2-core machines). Figures per piece go to
# .engine/report/<piece>.json: wall seconds, module cache growth, build cache growth, binary size.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ENGINE="$ROOT/.engine"
BIN="$ENGINE/bin"
REPORT="$ENGINE/report"
MISSING="$ENGINE/missing"
STAMPS="$ENGINE/stamps"
mkdir -p "$BIN" "$REPORT" "$MISSING" "$STAMPS" "$ENGINE/home" "$ENGINE/state"

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
  local piece="$1"; shift
  {
    go version
    cat "$HERE/go.mod" "$HERE/go.sum"
    printf '%s\n' "$@"
    if [ -d "$HERE/cmd/$piece" ]; then
      find "$HERE/cmd/$piece" -type f | LC_ALL=C sort | xargs sha256sum
    fi
  } | sha256sum | cut -d' ' -f1
}

# build PIECE PACKAGE LDFLAGS
build() {
  local piece="$1" pkg="$2" ldflags="$3"
  local out="$BIN/$piece" stamp
  stamp="$(stamp_of "$piece" "$pkg" "$ldflags")"
  if [ -z "${MAC_ENGINE_FORCE:-}" ] && [ -x "$out" ] && [ "$(cat "$STAMPS/$piece" 2>/dev/null)" = "$stamp" ]; then
    log "$piece: up to date ($out)"
    return 0
  fi
  log "$piece: building $pkg (nice -n 19) ..."
  local mod0 cache0 t0 t1
  mod0="$(dir_bytes "$GOMODCACHE")"; cache0="$(dir_bytes "$GOCACHE")"; t0="$(date +%s)"
  (cd "$HERE" && nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$out.tmp" "$pkg")
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

# probe_missing PIECE MODULE@VERSION WHY: a piece whose source module cannot be had. Asks the
# module proxy once (a few KB) so the record says what the registry answers today.
probe_missing() {
  local piece="$1" modver="$2" why="$3" answer
  rm -f "$BIN/$piece"
  # Ask the proxy itself (no fall-back to a direct VCS fetch, which cannot work here).
  if answer="$(cd "$HERE" && GOPROXY="$(go env GOPROXY | sed 's/[,|]direct$//')" go mod download -json "$modver" 2>&1)"; then
    answer="served now: $(printf '%s' "$answer" | tr -d '\n' | cut -c1-200) - the build can be added"
  else
    answer="$(printf '%s' "$answer" | grep -o '"Error": "[^"]*' | head -1 | cut -c11- | sed 's/\\n\\t/ /g' | cut -c1-300)"
  fi
  printf '%s is not built: %s\nregistry answer for %s: %s\n' "$piece" "$why" "$modver" "$answer" \
    > "$MISSING/$piece.txt"
  log "$piece: NOT BUILT - $why ($modver: $answer)"
}

build pulumi github.com/pulumi/pulumi/pkg/v3/cmd/pulumi \
  "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION"
build pulumi-language-python ./cmd/pulumi-language-python \
  "-s -w -X main.Version=${PULUMI_VERSION#v}-mac"

probe_missing pulumi-resource-libvirt github.com/pulumi/pulumi-libvirt/provider@v0.5.4 \
  "neither github.com/pulumi/pulumi-libvirt/provider nor the Terraform provider it bridges (github.com/dmacvicar/terraform-provider-libvirt v0.8.1) is served by the Go module proxy"
probe_missing pulumi-resource-command github.com/pulumi/pulumi-command/provider@v1.2.1 \
  "github.com/pulumi/pulumi-command/provider (and github.com/pulumi/pulumi-go-provider it builds on) is not served by the Go module proxy"
probe_missing pulumi-resource-random github.com/pulumi/pulumi-random/provider/v4@v4.21.4 \
  "github.com/pulumi/pulumi-random/provider/v4 is not served by the Go module proxy"

# Local file backend and CLI settings inside .engine (env.sh exported PULUMI_HOME/BACKEND_URL).
"$BIN/pulumi" login --non-interactive "$PULUMI_BACKEND_URL" >/dev/null
log "ready: $("$BIN/pulumi" version) at $BIN; PULUMI_HOME=$PULUMI_HOME; backend $PULUMI_BACKEND_URL"
log "use it: . tools/engine/env.sh"
