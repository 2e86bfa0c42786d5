#!/usr/bin/env bash
# Screenshots of a training report, the way a person sees it: renders RUN/report.html (running
# `flowguard report RUN` first when --render is given) in headless Chromium and writes PNGs of its
# ratio-distribution and clipping sections, and of one study plot, to OUT (default docs/report/).
#
#   bash tools/report/screenshots.sh RUN [--render] [--out DIR] [--study-svg FILE]
#
# Needs chromium (apt-get install chromium); trims the margins and writes 256-colour PNGs with
# ImageMagick's `convert` when it is installed (apt-get install imagemagick). The demo run comes from tools/main.sh (.build/demo-run).
set -euo pipefail
cd "$(dirname "$0")/../.."
run=${1:?usage: screenshots.sh RUN [--render] [--out DIR] [--study-svg FILE]}
shift
out=docs/report
study=docs/study/clip-fraction-timestep.svg
render=0
while [ $# -gt 0 ]; do
    case "$1" in
        --render) render=1 ;;
        --out) out=$2; shift ;;
        --study-svg) study=$2; shift ;;
        *) echo "screenshots.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "screenshots.sh: needs chromium (apt-get install chromium)" >&2; exit 1; }
if [ "$render" = 1 ]; then
    bin=$(swift build -c release --show-bin-path)/flowguard
    [ -x "$bin" ] || swift build -c release --product flowguard >&2
    "$bin" report "$run" >&2
fi
page="$run/report.html"
[ -f "$page" ] || { echo "screenshots.sh: $page does not exist (pass --render to write it)" >&2; exit 1; }
mkdir -p "$out"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# shot NAME WIDTH HEIGHT FILE: a screenshot of FILE, trimmed to its content when ImageMagick is there.
shot() {
    local name=$1 width=$2 height=$3 file=$4
    "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
        --screenshot="$scratch/$name.png" --window-size="$width,$height" "file://$(realpath "$file")" >/dev/null 2>&1
    if convert -version 2>/dev/null | grep -q ImageMagick; then
        convert "$scratch/$name.png" -trim +repage -bordercolor white -border 12 -strip -colors 96 "PNG8:$out/$name.png"
    else
        cp "$scratch/$name.png" "$out/$name.png"
    fi
    echo "$out/$name.png ($(stat -c %s "$out/$name.png") bytes)"
}

# section ID: the page's head and that one section, as a page of its own.
section() {
    local id=$1
    { sed -n '1,/<\/head>/p' "$page"; echo '<body>'
      sed -n "/<section id=\"$id\">/,/<\/section>/p" "$page"; echo '</body></html>'; } > "$scratch/$id.html"
    grep -q "<section id=\"$id\">" "$scratch/$id.html" || { echo "screenshots.sh: $page has no section $id" >&2; exit 1; }
}

section ratio-distribution
shot report-ratio-distribution 1300 1000 "$scratch/ratio-distribution.html"
section clipping
shot report-clipping 1400 1900 "$scratch/clipping.html"
if [ -f "$study" ]; then
    shot study-$(basename "$study" .svg) 700 520 "$study"
fi
