#!/usr/bin/env bash
# Builds the two local container images as OCI archives, cached in
# ~/.cache/podssh/images/. Prints nothing on success; progress goes to stderr.
#   podssh.local/busybox:1.35    busybox-static, one symlink per applet; default
#                                command is an idle loop, so it doubles as the
#                                pod sandbox ("pause") image
#   podssh.local/debian:bookworm Debian minbase with bash, coreutils, tar and
#                                OpenSSH's sftp-server
set -euo pipefail
LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGES="${PODSSH_CACHE:-$HOME/.cache/podssh}/images"
mkdir -p "$IMAGES"
IDLE='["/bin/sh","-c","trap \"exit 0\" TERM INT; while :; do sleep 3600 & wait $!; done"]'

rootfs_common() {  # $1 rootfs
  mkdir -p "$1"/{tmp,root,etc,proc,sys,dev,run}
  chmod 1777 "$1/tmp"
}

if [[ ! -f "$IMAGES/busybox.tar" ]]; then
  echo ">> building image podssh.local/busybox:1.35" >&2
  work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
  r="$work/rootfs"; mkdir -p "$r/bin"
  cp /bin/busybox "$r/bin/busybox"
  for applet in $("$r/bin/busybox" --list); do
    [[ "$applet" == busybox ]] || ln -sf busybox "$r/bin/$applet"
  done
  mkdir -p "$r/usr/bin" "$r/sbin" "$r/usr/sbin"
  rootfs_common "$r"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$r/etc/group"
  mkdir -p "$r/var/www" && echo "podssh test page" > "$r/var/www/index.html"
  python3 "$LIB/oci_image.py" "$r" podssh.local/busybox:1.35 "$IMAGES/busybox.tar" --cmd "$IDLE"
  rm -rf "$work"; trap - EXIT
fi

if [[ ! -f "$IMAGES/debian.tar" ]]; then
  echo ">> building image podssh.local/debian:bookworm with debootstrap (a few minutes)" >&2
  work="$(mktemp -d /var/tmp/podssh-debootstrap.XXXXXX)"; trap 'rm -rf "$work"' EXIT
  r="$work/rootfs"
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  debootstrap --variant=minbase --include=openssh-sftp-server,procps \
    bookworm "$r" "${mirror:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r"/dev/* "$r"/proc/* "$r"/sys/*
  rootfs_common "$r"
  python3 "$LIB/oci_image.py" "$r" podssh.local/debian:bookworm "$IMAGES/debian.tar" --cmd "$IDLE"
  rm -rf "$work"; trap - EXIT
fi
