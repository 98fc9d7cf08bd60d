#!/usr/bin/env bash
# Build a plain Debian image from the distribution archive, the local stand-in for the
# public debian:<release>-slim (no registry is reachable here): debootstrap minbase,
# apt sources for main/updates/security from this machine's own mirror, docs stripped.
#   debian-base.sh SUITE IMAGE_TAG RECIPE_LABEL
set -euo pipefail
suite=$1 tag=$2 label=$3

# The mirror this machine's apt already uses (deb822 or one-line format).
mirror_of() {
  local pattern=$1
  { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '$1 == "URIs:" {print $2}'
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1 == "deb" {print $2}'
  } | grep -E "$pattern" | head -n1 || true
}
mirror=$(mirror_of '/debian/?$')
security=$(mirror_of '/debian-security/?$')
[ -n "$mirror" ] || { echo "debian-base: no Debian mirror found in this machine's apt sources" >&2; exit 1; }

rootfs=$(mktemp -d /var/tmp/kd-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=ca-certificates "$suite" "$rootfs" "$mirror" >/dev/null

{ printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" "$suite" "$suite"
  [ -z "$security" ] || printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$security" "$suite"
} > "$rootfs/etc/apt/sources.list.d/debian.sources"
: > "$rootfs/etc/apt/sources.list"
# Keep images small the way the official slim images do.
printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n' \
  > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*

tar -C "$rootfs" --numeric-owner -c . | docker import \
  --change "LABEL org.kokoro-deploy.recipe=$label" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' - "$tag" >/dev/null
