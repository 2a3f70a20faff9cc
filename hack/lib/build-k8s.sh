#!/usr/bin/env bash
# Builds the Kubernetes components from the published Go modules (hack/k8s/go.mod)
# into ~/.cache/podssh/k8s/<version>/, once. Later calls return at once.
set -euo pipefail
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
K8S_VERSION="$(awk '/^require k8s.io\/kubernetes/ {print $3}' "$HACK_DIR/k8s/go.mod")"
CACHE_ROOT="${PODSSH_CACHE:-$HOME/.cache/podssh}"
BIN_DIR="$CACHE_ROOT/k8s/$K8S_VERSION"
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

missing=()
for c in "${COMPONENTS[@]}"; do [[ -x "$BIN_DIR/$c" ]] || missing+=("$c"); done
if [[ ${#missing[@]} -eq 0 || "${1:-}" == --dir ]]; then echo "$BIN_DIR"; exit 0; fi

command -v go >/dev/null || { echo "build-k8s: the Go toolchain is required" >&2; exit 1; }
mkdir -p "$BIN_DIR"
work="$CACHE_ROOT/k8s/src-$K8S_VERSION"
mkdir -p "$work"
cp "$HACK_DIR/k8s/go.mod" "$HACK_DIR/k8s/doc.go" "$work/"
[[ -f "$HACK_DIR/k8s/go.sum" ]] && cp "$HACK_DIR/k8s/go.sum" "$work/"
cd "$work"
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
echo ">> downloading Kubernetes $K8S_VERSION modules" >&2
go mod download 2>&1 | sed 's/^/   /' >&2 || true
for c in "${missing[@]}"; do
  start=$(date +%s)
  echo ">> building $c ($K8S_VERSION) — the first build takes several minutes" >&2
  # kubelet needs cgo off but works without it; everything is static.
  go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/$c.tmp" "k8s.io/kubernetes/cmd/$c"
  mv "$BIN_DIR/$c.tmp" "$BIN_DIR/$c"
  echo ">> built $c in $(( $(date +%s) - start ))s" >&2
done
echo "$BIN_DIR"
