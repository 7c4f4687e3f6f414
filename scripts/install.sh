#!/usr/bin/env bash
# Installs nvr-playback-agent on this box, as a field technician would:
#
#   sudo bash scripts/install.sh                      # builds the .deb from this checkout
#   sudo bash scripts/install.sh ./nvr-playback-agent_0.1.0_all.deb
#
# It checks first that apt can satisfy every dependency and stops with one sentence,
# changing nothing, if it cannot. Running it twice is fine.
set -euo pipefail

say() { printf '%s\n' "$*"; }
die() { printf 'nvr-playback-agent install: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run it as root: sudo bash $0 $*"
command -v apt-get >/dev/null || die "this is not a Debian-based system (no apt-get)."
deb=${1:-}
[ -z "$deb" ] || [ -f "$deb" ] || die "no such file: $deb"
[ -z "$deb" ] || deb=$(realpath "$deb")

missing() {  # the runtime dependencies apt has no candidate for
    local package
    for package in python3 python3-aiohttp python3-psutil python3-watchfiles python3-prometheus-client; do
        case $(apt-cache policy "$package" 2>/dev/null) in
            *"Candidate: (none)"* | "") printf '%s ' "$package" ;;
        esac
    done
}
gaps=$(missing)
if [ -n "$gaps" ]; then
    apt-get update -qq || true  # the package lists may only be stale
    gaps=$(missing)
fi
if [ -n "$gaps" ]; then
    . /etc/os-release 2>/dev/null || true
    die "${PRETTY_NAME:-this system} offers no ${gaps% }; nvr-playback-agent needs Debian 13 (trixie) or newer, or Raspberry Pi OS based on it, so upgrade the system first. Nothing was changed."
fi

if [ -z "$deb" ]; then
    checkout=$(cd "$(dirname "$0")/.." && pwd)
    [ -f "$checkout/debian/control" ] || die "give the .deb to install, or run this from a checkout."
    say "Building the package from $checkout ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        dpkg-dev debhelper dh-python python3 >/dev/null
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    mkdir "$build/src"
    if git -C "$checkout" rev-parse 2>/dev/null; then
        git -C "$checkout" ls-files -z | (cd "$checkout" && xargs -0 cp --parents -t "$build/src")
    else
        tar -C "$checkout" --exclude=.git --exclude=.venv --exclude=demo -cf - . \
            | tar -C "$build/src" -xf -
    fi
    # -d: the Build-Depends were installed just above; a pure-Python package needs no
    # compiler, so build-essential is not pulled onto the box.
    (cd "$build/src" && dpkg-buildpackage -b -us -uc -d >"$build/build.log" 2>&1) \
        || { tail -n 20 "$build/build.log"; die "building the package failed (log above)."; }
    deb=$(ls "$build"/nvr-playback-agent_*_all.deb)
fi

say "Installing $(basename "$deb") with apt ..."
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" >/dev/null

config=/etc/nvr-playback-agent/agent.toml
port=$(sed -n 's/^port *= *\([0-9]*\).*/\1/p' "$config" | head -n 1)
port=${port:-8080}
if [ -d /run/systemd/system ]; then
    systemctl restart nvr-playback-agent
    for _ in $(seq 1 50); do
        if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=1)" 2>/dev/null; then
            break
        fi
        sleep 0.2
    done
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=2)" 2>/dev/null \
        || die "the service did not answer on port $port; see: journalctl -u nvr-playback-agent"
    state="running"
else
    state="installed (this system does not run systemd: start it with nvr-playback-agent --config $config)"
fi

address=$(hostname -I 2>/dev/null | cut -d' ' -f1)
address=${address:-localhost}
say ""
say "nvr-playback-agent is $state."
say "  health:        http://$address:$port/healthz"
say "  cameras:       http://$address:$port/api/cameras"
say "  API reference: http://$address:$port/api/openapi.json"
say "  configuration: $config (then: systemctl restart nvr-playback-agent)"
say "  logs:          journalctl -u nvr-playback-agent"
