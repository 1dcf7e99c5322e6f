#!/bin/sh
# Runs INSIDE the image's root filesystem (chroot), called by scripts/build-image as an
# mmdebstrap customize hook. Installs kshark into /opt/kshark from the wheels that
# scripts/build-image downloaded from PyPI on the host (the chroot has no PyPI access of its
# own: no pip configuration, no certificates beyond Debian's), compiles the capture modules
# with mypyc against the image's own Python, then removes the compiler again.
#   /tmp/kshark-build/wheels   kshark's wheel, its dependencies', mypy's (build only)
#   /tmp/kshark-build/src      the source tree (scripts/build_native.py and capture/)
#   /tmp/kshark-build/kshark-probe   the pods' exec probe (deploy/image/kshark-probe)
set -eu
B=/tmp/kshark-build
python3 -m venv /opt/kshark
/opt/kshark/bin/pip install -q --no-index --find-links "$B/wheels" kshark

# The mypyc build (capture/__init__.py loads it from <site-packages>/.native/<digest>/ when the
# digest of the installed sources matches). Built here, not on the host, so that it is compiled
# against exactly the Python it will run under.
python3 -m venv "$B/buildvenv"
"$B/buildvenv/bin/pip" install -q --no-index --find-links "$B/wheels" mypy
(cd "$B/src" && "$B/buildvenv/bin/python" scripts/build_native.py)
site=$(/opt/kshark/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$site/.native"
mv "$B/src/.native/"* "$site/.native/"
/opt/kshark/bin/python - <<'PY'
import capture, capture.pipeline  # noqa: F401  (loads the compiled group)
loaded = capture.native_modules_loaded()
assert capture.NATIVE_BUILD and "pipeline" in loaded, (capture.NATIVE_BUILD, loaded)
print("install.sh: compiled capture modules in use:", ", ".join(loaded))
PY
# The exec probe of the pods (deploy/kubernetes): stdlib only, run by Debian's python3.
install -m 0755 "$B/kshark-probe" /opt/kshark/bin/kshark-probe
/opt/kshark/bin/python -m pip uninstall -q -y pip setuptools 2>/dev/null || true
rm -rf "$B"
# What only the build needed; apt's lists and caches are not part of an image.
# What they pulled in goes too, also what only a Recommends of something kept held on to
# (binutils, perl: ~60 MB).
apt-get purge -y -qq gcc python3-dev >/dev/null
apt-get autoremove --purge -y -qq -o APT::AutoRemove::RecommendsImportant=false \
  -o APT::AutoRemove::SuggestsImportant=false >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/* /var/log/* /root/.cache
