#!/bin/sh
# Runs INSIDE the image's root filesystem (chroot), called by scripts/build-image as an
# mmdebstrap customize hook. Builds kshark's wheel with the capture modules compiled by mypyc
# (setup.py) against the image's own Python, installs it into /opt/kshark with its dependencies
# from the wheels that scripts/build-image downloaded from PyPI on the host (the chroot has no
# PyPI access of its own: no pip configuration, no certificates beyond Debian's), then removes
# the compiler again.
#   /tmp/kshark-build/wheels   kshark's dependencies' wheels, and setuptools', wheel's and
#                              mypy's (the build's, setup.py's build-system requires)
#   /tmp/kshark-build/src      the source tree kshark's wheel is built from
#   /tmp/kshark-build/kshark-probe   the pods' exec probe (deploy/image/kshark-probe)
set -eu
B=/tmp/kshark-build
python3 -m venv /opt/kshark
# KSHARK_MYPYC=1: a compiler missing here fails the build instead of making a slower image.
KSHARK_MYPYC=1 /opt/kshark/bin/pip wheel -q --no-index --find-links "$B/wheels" --no-deps \
  --wheel-dir "$B/dist" "$B/src"
/opt/kshark/bin/pip install -q --no-index --find-links "$B/wheels" "$B"/dist/kshark-*.whl
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
