#!/usr/bin/env bash
# Prepares a Debian machine for running the agent from this checkout and for its tests:
# ffmpeg, GStreamer, VLC, Chromium and python3-venv from apt when missing, then .venv with
# the project installed at the versions Debian 13 ships (constraints.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || need+=(ffmpeg)
# Real players play sessions in the tests beside ffmpeg: GStreamer's playbin3 (hlsdemux2),
# VLC (run as an ordinary user) and Chromium's own <video>.
command -v gst-launch-1.0 >/dev/null && gst-inspect-1.0 avdec_h264 >/dev/null 2>&1 \
    && gst-inspect-1.0 hlsdemux2 >/dev/null 2>&1 && gst-inspect-1.0 avdec_h265 >/dev/null 2>&1 \
    || need+=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
              gstreamer1.0-plugins-bad gstreamer1.0-libav)
command -v cvlc >/dev/null || need+=(vlc-bin vlc-plugin-base)
command -v chromium >/dev/null || need+=(chromium)
command -v npm >/dev/null || need+=(npm)
[ -x .venv/bin/python ] || python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# A disk that stalls is a FUSE file system in the tests (libfuse 3, named below).
/sbin/ldconfig -p | grep -q 'libfuse3\.so\.' || need+=(libfuse3)
if ((${#need[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    for i in "${!need[@]}"; do  # libfuse 3's package: libfuse3-4 on Debian 13, libfuse3-3 on 12
        if [ "${need[$i]}" = libfuse3 ]; then
            need[$i]=libfuse3-3
            apt-cache show libfuse3-4 >/dev/null 2>&1 && need[$i]=libfuse3-4
        fi
    done
    echo "Installing ${need[*]} with apt-get ..."
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'

# hls.js plays sessions in Chromium in the tests: a test-only asset from npm, kept out of git.
hlsjs=.cache/hls.js-1.7.4/hls.min.js
if [ ! -f "$hlsjs" ]; then
    mkdir -p "$(dirname "$hlsjs")"
    tarball=$(cd .cache && npm pack --silent hls.js@1.7.4)
    tar -xzf ".cache/$tarball" -C "$(dirname "$hlsjs")" --strip-components=2 package/dist/hls.min.js
    rm ".cache/$tarball"
fi
