#!/bin/sh
# Installs what `cargo install` does not: the systemd units (pointed at the installed binary),
# the man page, the shell completions and /etc/exoip. For a Debian package use `cargo deb`.
#
#   cargo install --path . --root /usr/local     # /usr/local/bin/exoip
#   packaging/install.sh                         # as root
#
# Usage: packaging/install.sh [BINARY]   (default: the exoip on PATH)
# Environment: PREFIX (/usr/local), SYSTEMD_DIR (/etc/systemd/system), DESTDIR (a staging root).
set -eu

cd "$(dirname "$0")/.."
binary=${1:-$(command -v exoip || true)}
if [ -z "$binary" ] || [ ! -x "$binary" ]; then
    echo "install.sh: no exoip binary: run 'cargo install --path . --root /usr/local' first, or give its path" >&2
    exit 1
fi
case $binary in
    /*) ;;
    *) binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary") ;;
esac
PREFIX=${PREFIX:-/usr/local}
SYSTEMD_DIR=${SYSTEMD_DIR:-/etc/systemd/system}
DESTDIR=${DESTDIR:-}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for unit in exoip.service exoip@.service; do
    # The units run /usr/bin/exoip (the package's path).
    sed "s#/usr/bin/exoip#$binary#g" "examples/systemd/$unit" >"$tmp/$unit"
    install -D -m 0644 "$tmp/$unit" "$DESTDIR$SYSTEMD_DIR/$unit"
done
install -D -m 0644 man/exoip.8 "$DESTDIR$PREFIX/share/man/man8/exoip.8"
install -D -m 0644 man/exoip.toml.5 "$DESTDIR$PREFIX/share/man/man5/exoip.toml.5"
install -D -m 0644 completions/exoip.bash "$DESTDIR$PREFIX/share/bash-completion/completions/exoip"
install -D -m 0644 completions/_exoip "$DESTDIR$PREFIX/share/zsh/site-functions/_exoip"
install -D -m 0644 completions/exoip.fish "$DESTDIR$PREFIX/share/fish/vendor_completions.d/exoip.fish"
# Secrets live here: root only. An existing configuration is kept.
install -d -m 0700 "$DESTDIR/etc/exoip"
if [ ! -e "$DESTDIR/etc/exoip/exoip.toml" ]; then
    install -m 0600 examples/exoip.toml "$DESTDIR/etc/exoip/exoip.toml"
fi
if [ ! -e "$DESTDIR/etc/exoip/exoip.env" ]; then
    install -m 0600 examples/systemd/exoip.env "$DESTDIR/etc/exoip/exoip.env"
fi
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

cat <<EOT
Installed the units ($DESTDIR$SYSTEMD_DIR/exoip.service, exoip@.service, running $binary),
exoip(8) and the completions. Next:
  write /etc/exoip/exoip.toml (or a drop-in with flags: systemctl edit exoip),
  the API secret alone in /etc/exoip/api-secret (chmod 600), then
  exoip check ... && systemctl enable --now exoip
EOT
