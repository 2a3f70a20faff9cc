#!/usr/bin/env bash
# Builds the helm CLI from its published Go module (no Debian package ships it) into
# ~/.cache/podssh/helm/<version>/helm, once, like hack/lib/build-k8s.sh does for Kubernetes.
# Later calls return at once. Prints the binary's path; progress goes to stderr.
#   hack/lib/build-helm.sh          build when missing, print the path
#   hack/lib/build-helm.sh --path   print the path only (it may not exist yet)
set -euo pipefail
HELM_VERSION=v3.19.5
HELM_K8S_MINOR=34  # the k8s.io/client-go v0.<minor> in helm's go.mod: the default Kubernetes version it renders for
CACHE_ROOT="${PODSSH_CACHE:-$HOME/.cache/podssh}"
BIN_DIR="$CACHE_ROOT/helm/$HELM_VERSION"
HELM="$BIN_DIR/helm"

if [[ -x "$HELM" || "${1:-}" == --path ]]; then echo "$HELM"; exit 0; fi
command -v go >/dev/null || { echo "build-helm: the Go toolchain is required" >&2; exit 1; }
mkdir -p "$BIN_DIR"
start=$(date +%s)
echo ">> building helm $HELM_VERSION from its Go module (a few minutes, once)" >&2
# `go install module@version` builds outside any module: -mod must not be set.
# Stamped as helm's own release build does, so `helm version` tells the truth and `helm template`
# and `helm lint` assume a current Kubernetes (unstamped: 1.20, older than charts' kubeVersion).
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$HELM_K8S_MINOR"
done
tmp="$(mktemp -d "$BIN_DIR/.build.XXXXXX")"; trap 'rm -rf "$tmp"' EXIT
GOFLAGS="-buildvcs=false" CGO_ENABLED=0 GOBIN="$tmp" \
  go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv "$tmp/helm" "$HELM"
echo ">> built helm $HELM_VERSION in $(( $(date +%s) - start ))s" >&2
echo "$HELM"
