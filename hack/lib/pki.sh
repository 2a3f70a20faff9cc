#!/usr/bin/env bash
# Generates the cluster's CA, serving and client certificates, the service
# account signing key and the kubeconfigs, with openssl. Idempotent.
# Usage: pki.sh STATE_DIR NODE_NAME NODE_IP SERVICE_IP
set -euo pipefail
STATE="$1" NODE="$2" NODE_IP="$3" SVC_IP="$4"
PKI="$STATE/pki"
mkdir -p "$PKI"; chmod 700 "$PKI"
cd "$PKI"
[[ -f ca.crt ]] || openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt \
  -days 3650 -subj "/CN=podssh-local-ca" 2>/dev/null

cert() {  # name CN O [SANs]
  local name="$1" cn="$2" o="$3" sans="${4:-}"
  [[ -f "$name.crt" ]] && return 0
  local subj="/CN=$cn"; [[ -n "$o" ]] && subj="/O=$o/CN=$cn"
  openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=digitalSignature,keyEncipherment"
    if [[ -n "$sans" ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$sans"
    else echo "extendedKeyUsage=clientAuth"; fi; } > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$name.crt" \
    -days 3650 -extfile "$name.ext" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}
cert apiserver kube-apiserver "" \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP,IP:$SVC_IP"
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
cert admin podssh-admin system:masters
cert controller-manager system:kube-controller-manager ""
cert scheduler system:kube-scheduler ""
cert kube-proxy system:kube-proxy ""
cert kubelet "system:node:$NODE" system:nodes "DNS:$NODE,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP"
[[ -f sa.key ]] || { openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }

kubeconfig() {  # name server
  local name="$1" server="$2" out="$STATE/$1.kubeconfig"
  [[ -f "$out" ]] && return 0
  cat > "$out" <<KC
apiVersion: v1
kind: Config
clusters:
- name: podssh-local
  cluster:
    server: $server
    certificate-authority: $PKI/ca.crt
users:
- name: $name
  user:
    client-certificate: $PKI/$name.crt
    client-key: $PKI/$name.key
contexts:
- name: podssh-local
  context: {cluster: podssh-local, user: $name}
current-context: podssh-local
KC
  chmod 600 "$out"
}
for n in admin controller-manager scheduler kube-proxy kubelet; do kubeconfig "$n" "https://127.0.0.1:6443"; done
