#!/usr/bin/env bash
# Install everything mtransfer needs on a fresh Debian machine: system packages and a
# Python virtual environment at .venv with the pinned stack. Idempotent: a second run
# checks what is there and downloads nothing.
#
#   bash scripts/setup.sh              # runtime, test and benchmark dependencies
#   bash scripts/setup.sh --festival   # also every Festival voice of the second speech corpus (~400 MB)
#
# Environment: MTRANSFER_VENV (default: <repo>/.venv), PYTHON (default: python3.11 or python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MTRANSFER_VENV:-$root/.venv}"
python_bin="${PYTHON:-$(command -v python3.11 || command -v python3)}"

# --- system packages --------------------------------------------------------------------
# festival with two small voices (Italian, English): the tests build a small corpus with them
apt_packages=(ffmpeg espeak-ng sox fortunes fortunes-de fortunes-es fortunes-it fortunes-ru
              festival festvox-italp16k festvox-kallpc16k)
if [ "${1:-}" = "--festival" ]; then  # the voices of mtransfer.builtins.festival_corpus.FESTIVAL_PACKAGES
    apt_packages+=(festival-hi festival-mr festival-te festival-czech festival-ca festvox-hi-nsk festvox-mr-nsk
                   festvox-te-nsk festvox-ru festvox-czech-dita festvox-czech-krb festvox-czech-machac festvox-czech-ph
                   festvox-ca-ona-hts festvox-suopuhe-lj festvox-suopuhe-mv festvox-itapc16k festvox-kdlpc16k
                   festvox-us-slt-hts)
elif [ -n "${1:-}" ]; then
    echo "setup.sh: unknown option $1 (expected --festival or nothing)" >&2; exit 2
fi
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "[setup] installing system packages: ${missing[*]}"
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "[setup] system packages present"
fi

# --- python environment -------------------------------------------------------------------
stamp="$venv/.mtransfer-setup"
want="$(cat "$root/pyproject.toml" "$root/scripts/setup.sh" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "import mtransfer" 2>/dev/null; then
    echo "[setup] python environment up to date ($venv)"
    exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating virtual environment $venv"
    "$python_bin" -m venv "$venv"
fi
echo "[setup] installing the pinned stack (first run: several GB, a few minutes)"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e "$root[test,bench]"
# CTC beam search: pyctcdecode 0.5 declares numpy<2 but runs on numpy 2 (tested), so without its pins
"$venv/bin/python" -m pip install -q --no-deps pyctcdecode==0.5.0 pygtrie==2.6.2
# KenLM n-grams for the beam search: built from source; optional (beam search runs without it)
"$venv/bin/python" -m pip install -q kenlm==0.3.0 2>/dev/null \
    || echo "[setup] kenlm did not build (needs a C++ compiler): beam search will run without an n-gram"
echo "$want" > "$stamp"
echo "[setup] done"
