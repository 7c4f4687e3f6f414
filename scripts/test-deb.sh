#!/usr/bin/env bash
# Builds the .deb in Debian 13 (trixie) and proves it in a fresh Debian 13 chroot:
# lintian, what `apt install ./<deb>` pulls with and without its Recommends (ffmpeg), the
# install with nothing else preinstalled and no Recommends (no ffmpeg on the box), files,
# user, conffile and unit in place, the agent started as the unit starts it, a playback
# session and its clip.mp4 read to the end by ffmpeg (this machine's), `apt remove`
# keeping config and state, `apt purge` leaving nothing of the package and the
# recordings untouched.
#
#   sudo bash scripts/test-deb.sh        (needs root, debootstrap and the Debian mirror)
#
# Base trees are cached under $NVR_DEB_CACHE (default /var/cache/nvr-playback-agent-test,
# about 800 MB) and rebuilt after a week, so repeated runs on one machine take a minute or
# two; the first takes a few more. To free the space or force a rebuild:
#   sudo rm -rf /var/cache/nvr-playback-agent-test
# The test only stops the agent it started itself (by the PID it recorded), so running it
# on a box where the package is installed leaves the installed service alone.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${NVR_DEB_CACHE:-/var/cache/nvr-playback-agent-test}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
started=$SECONDS

step() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() { printf '   FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root (chroots and debootstrap need it)"
if ! command -v debootstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

work=$(mktemp -d /var/tmp/nvr-deb-test.XXXXXX)
mounted=()
agent=""  # the PID of the agent this test started, once it runs
cleanup() {
    if [ -n "$agent" ]; then kill -KILL "$agent" 2>/dev/null || true; fi
    for dir in "${mounted[@]}"; do umount -l "$dir" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

in_root() {  # in_root DIR COMMAND...: run in a chroot with /proc and DNS
    local root=$1
    shift
    if ! mountpoint -q "$root/proc"; then
        mount -t proc proc "$root/proc"
        mounted+=("$root/proc")
    fi
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive HOME=/root "$@"
}

cached_tree() {  # cached_tree NAME PACKAGES...: a trixie tree with PACKAGES, as a tarball
    local name=$1
    shift
    local tarball=$cache/$name.tar
    if [ -f "$tarball" ] && [ -z "$(find "$tarball" -mtime +7)" ]; then
        ok "the $name tree is cached from $(date -r "$tarball" '+%Y-%m-%d %H:%M')"
        return
    fi
    mkdir -p "$cache"
    local tree=$work/$name.tree
    echo "   building the $name tree: debootstrap (about half a minute) ..."
    debootstrap --variant=minbase trixie "$tree" "$mirror" >/dev/null
    if (($#)); then
        echo "   apt-get install $* (about half a minute) ..."
        in_root "$tree" apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "$@" \
            >/dev/null
    fi
    in_root "$tree" apt-get clean
    umount -l "$tree/proc"
    tar -C "$tree" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$tree"
}

unpack() {  # unpack NAME DIR
    mkdir -p "$2"
    tar -C "$2" -xf "$cache/$1.tar"
}

step "Debian 13 trees (cached in $cache)"
cached_tree base
cached_tree build dpkg-dev debhelper dh-python python3 lintian
ok "base and build trees ready after $((SECONDS - started)) s"

step "Build the package in Debian 13"
build=$work/build
unpack build "$build"
mkdir -p "$build/src/nvr-playback-agent"
git -C "$repo" ls-files -z | (cd "$repo" && xargs -0 cp --parents -t "$build/src/nvr-playback-agent")
# -d: the tree holds exactly the Build-Depends; an Architecture: all package needs no
# compiler, so build-essential is left out.
in_root "$build" sh -c 'cd /src/nvr-playback-agent && dpkg-buildpackage -b -us -uc -d' \
    >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log"; fail "dpkg-buildpackage"; }
deb=$(cd "$build/src" && ls nvr-playback-agent_*_all.deb)
cp "$build/src/$deb" "$work/"
ok "built $deb ($(du -k "$work/$deb" | cut -f1) KiB)"

version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' agent/__init__.py)
[ "$(dpkg-deb -f "$work/$deb" Version)" = "$version" ] || fail "package version is not $version"
ok "package version $version matches agent/__init__.py"
for dep in python3-aiohttp python3-psutil python3-watchfiles python3-prometheus-client python3; do
    dpkg-deb -f "$work/$deb" Depends | grep -q "\b$dep\b" || fail "Depends lacks $dep"
done
! dpkg-deb -f "$work/$deb" Depends | grep -q "\bffmpeg\b" || fail "Depends has ffmpeg"
[ "$(dpkg-deb -f "$work/$deb" Recommends)" = ffmpeg ] || fail "Recommends is not ffmpeg"
ok "Depends: $(dpkg-deb -f "$work/$deb" Depends); Recommends: ffmpeg"
ok "Installed-Size: $(dpkg-deb -f "$work/$deb" Installed-Size) KiB"

step "lintian"
# As an ordinary user, as lintian recommends (as root it warns that it is root).
chmod -R a+rX "$build/src"
in_root "$build" setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME=/tmp \
    lintian --fail-on error,warning --display-info "/src/$deb" | tee "$work/lintian.log" \
    || fail "lintian"
ok "no errors, no warnings ($(grep -c . "$work/lintian.log" || true) informational tags)"

step "Install with apt alone in a fresh Debian 13 chroot"
root=$work/install
unpack base "$root"
cp "$work/$deb" "$root/tmp/"
in_root "$root" apt-get update -qq
# What apt would pull onto a minimal Debian 13, with its Recommends (apt's default) and
# without: packages, and the disk they take.
pulls() {
    in_root "$root" apt-get install --assume-no "$@" "/tmp/$deb" 2>/dev/null \
        | sed -n 's/^\([0-9]*\) upgraded, \([0-9]*\) newly installed.*/\2 packages/p;
                  s/^After this operation, \(.*\) of additional disk space will be used./\1/p' \
        | paste -sd ' ' || true
}
ok "apt would install, with Recommends (ffmpeg): $(pulls); without: $(pulls --no-install-recommends)"
before=$SECONDS
echo "   apt-get install --no-install-recommends ./$deb (about half a minute) ..."
in_root "$root" apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "/tmp/$deb" \
    >"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log"; fail "apt install"; }
installed=$((SECONDS - before))
in_root "$root" sh -c '! command -v ffmpeg' >/dev/null || fail "ffmpeg came with the package"
ok "apt-get install --no-install-recommends ./$deb in $installed s: no ffmpeg on the box"
cp scripts/install.sh "$root/tmp/"
in_root "$root" bash /tmp/install.sh "/tmp/$deb" >"$work/install.log" 2>&1 \
    || { cat "$work/install.log"; fail "scripts/install.sh over the installed package"; }
grep -q "nvr-playback-agent is installed" "$work/install.log" || fail "install.sh said: $(cat "$work/install.log")"
ok "scripts/install.sh run again over it: fine (idempotent)"

step "Files, user, conffile and unit"
for path in /usr/bin/nvr-playback-agent /usr/share/nvr-playback-agent/agent/__main__.py \
    /etc/nvr-playback-agent/agent.toml /usr/lib/systemd/system/nvr-playback-agent.service \
    /usr/share/doc/nvr-playback-agent/copyright; do
    [ -e "$root$path" ] || fail "$path is missing"
done
ok "program, private package, config, unit and copyright in place"
[ ! -e "$root/usr/lib/python3/dist-packages/agent" ] || fail "agent leaked into dist-packages"
ok "nothing in the shared dist-packages"
in_root "$root" dpkg-query -W -f='${Conffiles}\n' nvr-playback-agent | grep -q /etc/nvr-playback-agent/agent.toml \
    || fail "agent.toml is not a conffile"
ok "/etc/nvr-playback-agent/agent.toml is a conffile"
user_line=$(in_root "$root" getent passwd nvr-playback-agent) || fail "no nvr-playback-agent user"
case $user_line in *nologin) ;; *) fail "the user has a login shell: $user_line" ;; esac
ok "system user: $user_line"
state=$(in_root "$root" stat -c %U:%a /var/lib/nvr-playback-agent)
[ "$state" = "nvr-playback-agent:750" ] || fail "state directory is $state"
ok "state directory /var/lib/nvr-playback-agent owned by the user, mode 750"
in_root "$root" /usr/bin/nvr-playback-agent --version | grep -q "$version" || fail "--version"
ok "nvr-playback-agent --version: $version"
# Inside the chroot, with Debian 13's systemd: only what concerns this unit counts.
in_root "$root" systemd-analyze verify nvr-playback-agent.service 2>&1 \
    | grep nvr-playback-agent | tee "$work/verify.log" || true
if grep -q . "$work/verify.log"; then fail "systemd-analyze verify"; fi
ok "systemd-analyze verify: clean"
exposure=$(in_root "$root" systemd-analyze security --offline=true \
    /usr/lib/systemd/system/nvr-playback-agent.service 2>&1 \
    | sed -n 's/.*Overall exposure level for [^:]*: //p')
[ -n "$exposure" ] || fail "systemd-analyze security gave no rating"
ok "systemd-analyze security: $exposure"

step "Run the installed agent as the unit does, and play a session"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -i "s/^port = 8080/port = $port/; s/^host = \"0.0.0.0\"/host = \"127.0.0.1\"/" \
    "$root/etc/nvr-playback-agent/agent.toml"
in_root "$root" install -d -o root -g nvr-playback-agent -m 0750 /var/lib/nvr/recordings
unit_exec=$(sed -n 's/^ExecStart=//p' debian/nvr-playback-agent.service)
# The shell records its PID, then becomes the agent: that PID is the agent's.
in_root "$root" sh -c 'echo $$ >/tmp/test-agent.pid; exec "$@"' sh \
    setpriv --reuid=nvr-playback-agent --regid=nvr-playback-agent --init-groups \
    --no-new-privs $unit_exec >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 1 50); do
    [ -s "$root/tmp/test-agent.pid" ] && break
    sleep 0.1
done
agent=$(cat "$root/tmp/test-agent.pid") || fail "the agent did not start"
launched=$SECONDS
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
    curl -fsS "$base/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
health=$(curl -fsS "$base/healthz") || { cat "$work/agent.log"; fail "/healthz"; }
ok "healthy $((SECONDS - launched)) s after it started (apt install took $installed s): $health"
# The box has no ffmpeg: the footage is rendered here (by the project's venv, which
# scripts/test.sh makes first), then placed in the box's tree.
"$repo/.venv/bin/python" -c '
import asyncio, sys, time
from pathlib import Path
from agent.demo import place, render_run
from agent.layout import make_layout
run = asyncio.run(render_run(Path(sys.argv[1]) / "render", 30, 10, size="320x240"))
start = int(time.time() - 600) * 1_000_000
place(run, Path(sys.argv[2]), make_layout("ffmpeg", "UTC"), "door", start)
' "$work" "$root/var/lib/nvr/recordings"
in_root "$root" chgrp -R nvr-playback-agent /var/lib/nvr/recordings
in_root "$root" chmod -R g+rX /var/lib/nvr/recordings
session=$(python3 - "$base" <<'PY'
import json, sys, time, urllib.request
base = sys.argv[1]
deadline = time.time() + 20
while time.time() < deadline:
    cams = json.load(urllib.request.urlopen(base + "/api/cameras"))["cameras"]
    if cams and cams[0]["segment_count"] == 3:
        break
    time.sleep(0.2)
cam = cams[0]
body = json.dumps({"camera_id": cam["id"], "from": cam["first_start"], "to": cam["last_end"]})
request = urllib.request.Request(base + "/api/playback", body.encode(), method="POST")
print(json.load(urllib.request.urlopen(request))["playlist_url"])
PY
) || fail "creating a session"
ok "session created: $session"
ffmpeg -v error -nostdin -i "$base$session" -f null - >"$work/play.log" 2>&1 \
    || { cat "$work/play.log"; fail "playing the session"; }
[ ! -s "$work/play.log" ] || { cat "$work/play.log"; fail "ffmpeg reported errors"; }
ok "ffmpeg played the whole session over HTTP without an error"
clip=${base}${session%index.m3u8}clip.mp4
curl -fsS -o "$work/clip.mp4" "$clip" || fail "downloading the session's clip.mp4"
ffmpeg -v error -nostdin -i "$work/clip.mp4" -f null - >"$work/clip.log" 2>&1 \
    || { cat "$work/clip.log"; fail "reading the clip"; }
[ ! -s "$work/clip.log" ] || { cat "$work/clip.log"; fail "ffmpeg reported errors in the clip"; }
ok "its clip.mp4 ($(du -k "$work/clip.mp4" | cut -f1) KiB) made by an agent with no ffmpeg reads without an error"
for page in / /page/page.js /page/page.css; do
    curl -fsS -o /dev/null "$base$page" || fail "the page's $page is not served"
done
ok "the operator's page and its files are served from the package"
owner=$(in_root "$root" stat -c %U /var/lib/nvr-playback-agent/index.sqlite3)
[ "$owner" = nvr-playback-agent ] || fail "index owned by $owner"
ok "index and sessions written by the service user"
kill -TERM "$agent"
wait "$agent_pid" || fail "the agent did not exit cleanly on SIGTERM: $(tail -n 5 "$work/agent.log")"
agent=""
ok "stopped on SIGTERM with status 0"

step "apt remove keeps configuration and state; apt purge leaves nothing"
in_root "$root" apt-get remove -y -qq -o Dpkg::Use-Pty=0 nvr-playback-agent >/dev/null
[ -f "$root/etc/nvr-playback-agent/agent.toml" ] || fail "remove lost the configuration"
[ -d "$root/var/lib/nvr-playback-agent" ] || fail "remove lost the state"
ok "after remove: /etc/nvr-playback-agent and /var/lib/nvr-playback-agent kept"
in_root "$root" apt-get purge -y -qq -o Dpkg::Use-Pty=0 nvr-playback-agent >/dev/null
for path in /etc/nvr-playback-agent /var/lib/nvr-playback-agent /usr/share/nvr-playback-agent \
    /usr/bin/nvr-playback-agent /usr/lib/systemd/system/nvr-playback-agent.service; do
    [ ! -e "$root$path" ] || fail "$path is left after purge"
done
! in_root "$root" getent passwd nvr-playback-agent >/dev/null || fail "the user is left after purge"
in_root "$root" dpkg-query -W nvr-playback-agent >/dev/null 2>&1 && fail "dpkg still lists the package"
[ "$(find "$root/var/lib/nvr/recordings" -name '*.ts' | wc -l)" -eq 3 ] || fail "recordings touched"
ok "after purge: no files, no user, no dpkg entry; the recordings are untouched"

step "Done in $((SECONDS - started)) s"
echo "(deb build + lintian, install + session played, remove + purge)"
echo "deb: 3 passed, 0 failed"
