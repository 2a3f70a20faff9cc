#!/usr/bin/env bash
# Builds the two local container images as OCI archives, cached in
# ~/.cache/podssh/images/. Prints nothing on success; progress goes to stderr.
#   podssh.local/busybox:1.35    busybox-static, one symlink per applet; default
#                                command is an idle loop, so it doubles as the
#                                pod sandbox ("pause") image
#   podssh.local/distroless:1   distroless-like: one static binary (/app, a C program
#                                that sleeps until TERM, built with gcc -static), no
#                                shell, no libc; /etc/app.conf and a world-writable /data
#                                for the debug-container tests
#   podssh.local/debian:bookworm Debian minbase with bash, coreutils, tar, rsync, scp
#                                and OpenSSH's sftp-server
#   podssh.local/python-base:bookworm  (only with the argument `python-base`)
#                                Debian minbase with python3 and venv: the base the
#                                gateway image is built on here (BASE in the Dockerfile)
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

if [[ ! -f "$IMAGES/distroless.tar" ]]; then
  echo ">> building image podssh.local/distroless:1" >&2
  work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
  r="$work/rootfs"; mkdir -p "$r/etc" "$r/data" "$r/tmp"
  cat >"$work/app.c" <<'C'
#include <signal.h>
#include <unistd.h>
static void bye(int sig) { (void)sig; _exit(0); }
int main(void) { signal(SIGTERM, bye); signal(SIGINT, bye); for (;;) pause(); }
C
  gcc -static -Os -s -o "$r/app" "$work/app.c"
  chmod 1777 "$r/data" "$r/tmp"
  printf 'greeting=hello from the distroless target\n' >"$r/etc/app.conf"
  printf 'root:x:0:0:root:/:/app\nnonroot:x:65532:65532:nonroot:/data:/app\n' >"$r/etc/passwd"
  python3 "$LIB/oci_image.py" "$r" podssh.local/distroless:1 "$IMAGES/distroless.tar" --cmd '["/app"]'
  rm -rf "$work"; trap - EXIT
fi

debian_image() {  # name ref extra-packages
  local name="$1" ref="$2" include="$3"
  [[ -f "$IMAGES/$name.tar" ]] && return 0
  echo ">> building image $ref with debootstrap (a few minutes)" >&2
  local work; work="$(mktemp -d /var/tmp/podssh-debootstrap.XXXXXX)"
  local r="$work/rootfs"
  local mirror
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  if ! debootstrap --variant=minbase --include="$include" \
      bookworm "$r" "${mirror:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1; then
    tail -20 "$work/debootstrap.log" >&2; rm -rf "$work"; exit 1
  fi
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r"/dev/* "$r"/proc/* "$r"/sys/*
  rootfs_common "$r"
  python3 "$LIB/oci_image.py" "$r" "$ref" "$IMAGES/$name.tar" --cmd "$IDLE"
  rm -rf "$work"
}

if [[ "${1:-}" == python-base ]]; then
  debian_image python-base podssh.local/python-base:bookworm python3,python3-venv,ca-certificates
  exit 0
fi
debian_image debian podssh.local/debian:bookworm openssh-sftp-server,openssh-client,rsync,procps
