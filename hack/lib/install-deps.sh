#!/usr/bin/env bash
# Installs the Debian packages the local cluster and the end-to-end tests need.
# Idempotent: apt-get runs only when something is missing.
set -euo pipefail
PACKAGES=(
  containerd runc containernetworking-plugins etcd-server
  busybox-static debootstrap iptables conntrack iproute2 socat openssl
  openssh-client openssh-server rsync kmod util-linux procps psmisc ca-certificates buildah
  prometheus asciinema gcc libc6-dev
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo ">> installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Never let package scripts start daemons: the cluster script owns them.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
stamp=/var/lib/apt/periodic/podssh-update-stamp
if [[ ! -f $stamp ]] || [[ $(find "$stamp" -mmin +720 2>/dev/null) ]]; then
  apt-get update -qq >&2
  mkdir -p "$(dirname "$stamp")" && touch "$stamp"
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
