#!/bin/sh
# Assembles Hooker's runtime file system in OUT_DIR from a built binary: the binary, the shared
# libraries it loads (glibc and libgcc_s, as ldd lists them: a "distroless"-style base), busybox
# as /bin/sh and its applets (for `exec` actions), the CA bundle, a non-root user (10001) and the
# directories it writes. Used by the Dockerfile and by build-image.sh, so both images are the same.
#
#   sh daemonset/rootfs.sh BINARY OUT_DIR
#
# Needs: ldd, strip (binutils; optional), busybox-static (/bin/busybox or $BUSYBOX), ca-certificates.
set -eu

bin=${1:?usage: rootfs.sh BINARY OUT_DIR}
out=${2:?usage: rootfs.sh BINARY OUT_DIR}
busybox=${BUSYBOX:-/bin/busybox}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
uid=10001

[ -x "$bin" ] || { echo "rootfs.sh: $bin is not an executable" >&2; exit 1; }
[ -x "$busybox" ] || { echo "rootfs.sh: $busybox missing (install busybox-static)" >&2; exit 1; }
[ -f "$ca_bundle" ] || { echo "rootfs.sh: $ca_bundle missing (install ca-certificates)" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/bin" "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/tmp" "$out/config" \
  "$out/var/lib/hooker" "$out/var/log/hooker" "$out/var/run/hooker"

cp "$bin" "$out/usr/local/bin/hooker"
if command -v strip >/dev/null 2>&1; then
  strip "$out/usr/local/bin/hooker"
fi

# The dynamic loader and libraries, at the paths the binary asks for.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u |
  while read -r lib; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
  done

cp "$busybox" "$out/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$out/bin/$applet"
done

cp "$ca_bundle" "$out/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/bin/sh\nhooker:x:%s:%s:hooker:/var/lib/hooker:/bin/sh\n' "$uid" "$uid" >"$out/etc/passwd"
printf 'root:x:0:\nhooker:x:%s:\n' "$uid" >"$out/etc/group"
printf 'hosts: files dns\n' >"$out/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$out/etc/hosts"

chmod 1777 "$out/tmp"
chown "$uid:$uid" "$out/var/lib/hooker" "$out/var/log/hooker" "$out/var/run/hooker"
chmod 0750 "$out/var/lib/hooker" "$out/var/log/hooker" "$out/var/run/hooker"
