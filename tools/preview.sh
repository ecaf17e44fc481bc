#!/usr/bin/env bash
# `make preview`: `pulumi preview --policy-pack policy` of stacks, locally, with the engine that
# `make engine` built (.engine/bin) and its local file backend (.engine/state): what PR review
# runs (.github/workflows/preview.yml), without a Pulumi account.
#
#   bash tools/preview.sh [STACK...]     default: ci (every host is this machine's libvirtd)
#
# A preview of a fresh stack needs no libvirtd: the providers connect lazily (Check/Diff never dial).
#
# dev and prod name real hosts: previewing them contacts those hosts only when something on them
# already exists in the state, but this script still refuses them unless MAC_PREVIEW_REMOTE=1,
# so that nothing here reaches out by accident.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=tools/engine/env.sh
. tools/engine/env.sh

if ! [ -x .engine/bin/pulumi ] || ! [ -x .engine/bin/pulumi-language-python ]; then
  echo "make preview: the engine is not built: run \`make engine\`" >&2
  exit 2
fi
# Our plugins, as `make engine` installs them into PULUMI_HOME (or any on PATH).
for piece in libvirt command random; do
  if ! compgen -G "$PULUMI_HOME/plugins/resource-$piece-v*/pulumi-resource-$piece" >/dev/null \
     && ! command -v "pulumi-resource-$piece" >/dev/null 2>&1; then
    echo "make preview: provider plugin pulumi-resource-$piece is missing: run \`make engine\`" >&2
    exit 2
  fi
done

[ "$#" -gt 0 ] || set -- ci
# `pulumi stack select --create` writes an `encryptionsalt` for this machine's backend into the
# stack file: put every tracked stack file back as it was when the previews are done.
saved="$(mktemp -d)"
cp -p stacks/Pulumi.*.yaml "$saved/"
trap 'cp -p "$saved"/Pulumi.*.yaml stacks/ && rm -rf "$saved"' EXIT
status=0
for stack in "$@"; do
  if [ ! -f "stacks/Pulumi.$stack.yaml" ]; then
    echo "make preview: no stack file stacks/Pulumi.$stack.yaml" >&2
    exit 2
  fi
  case "$stack" in
    ci) ;;
    *) if [ "${MAC_PREVIEW_REMOTE:-}" != 1 ]; then
         echo "make preview: $stack names remote hosts; set MAC_PREVIEW_REMOTE=1 to preview it from here" >&2
         exit 2
       fi ;;
  esac
  pulumi stack select --create --non-interactive "$stack" >/dev/null
  echo "== pulumi preview --stack $stack --policy-pack policy"
  pulumi preview --non-interactive --stack "$stack" --policy-pack policy --diff || status=1
done
exit "$status"
