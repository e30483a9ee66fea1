#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for the chart's cluster tests.
#   scripts/cluster.sh build            build (or reuse cached) binaries and images
#   scripts/cluster.sh up               start the image registry, etcd, control plane, containerd, kubelet,
#                                       kube-proxy, CoreDNS, metrics-server
#   scripts/cluster.sh down [--purge]   stop everything, remove iptables chains, mounts and the cni0 bridge (idempotent);
#                                       --purge also deletes the pulled images and the registry's storage
#   scripts/cluster.sh status           what runs, node and pods
#   scripts/cluster.sh push IMAGE...    push docker images to the node's registry (localhost:5000/IMAGE)
#   scripts/cluster.sh smoke            Deployment + Service + HPA through cluster DNS and metrics
#   scripts/cluster.sh env              export lines (KUBECONFIG, PATH) for a shell
# Binaries are cached under ~/.cache/flts/k8s/bin; cluster state lives under ~/.cache/flts/k8s-state.
# Everything runs as local processes (needs root: containerd, iptables, mounts). Images come from a registry
# of our own on loopback (distribution): a push and a pull move only the layers that changed, so a code change
# costs seconds even though the PyTorch images are GBs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIB="$HERE/cluster"
CACHE="${FLTS_CACHE:-$HOME/.cache/flts}"
K8S_VERSION="${K8S_VERSION:-v1.33.13}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
METRICS_SERVER_VERSION="${METRICS_SERVER_VERSION:-v0.9.0}"
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
REGISTRY_VERSION="${REGISTRY_VERSION:-v3.1.2}"
BIN="$CACHE/k8s/bin"
IMAGES="$CACHE/k8s/images"
LOGS="$CACHE/k8s/logs"
SRC="$CACHE/k8s/src"
STATE="${FLTS_K8S_STATE:-$CACHE/k8s-state}"
KUBECONFIG_PATH="$STATE/admin.kubeconfig"
# Go caches under ~/.cache/flts so CI can keep one directory between runs.
export GOMODCACHE="${GOMODCACHE:-$CACHE/go/mod}" GOCACHE="${GOCACHE:-$CACHE/go/build}"
export GOTOOLCHAIN=local GOWORK=off
# The machine is shared (2 cores): builds run at low priority.
NICE="nice -n 15"

say() { printf '==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'cluster.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------- build

APT_PACKAGES=(containerd runc containernetworking-plugins conntrack socat ethtool iptables etcd-server
  openssl curl iproute2)

ensure_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  # `apt-get update` only when a package is unknown to the local lists (a fresh machine).
  apt-cache show "${missing[@]}" >/dev/null 2>&1 || apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian's etcd package may start a service on a real init system; we run our own.
}

# Timed step: prints start/end and the seconds taken, also to the build log.
timed() {
  local name="$1"; shift
  local t0=$SECONDS
  say "build $name ..."
  "$@"
  say "built $name in $((SECONDS - t0)) s"
  echo "$name $((SECONDS - t0))" >> "$LOGS/build-times.txt"
}

k8s_source() {
  # The kubernetes module's go.mod replaces k8s.io/* with ./staging/src/... which the module zip lacks:
  # point each at the published module of the same release instead.
  local dir="$SRC/kubernetes-$K8S_VERSION" modver="v0.${K8S_VERSION#v1.}" from
  if [ ! -f "$dir/.rewritten" ]; then
    say "downloading k8s.io/kubernetes@$K8S_VERSION from the Go module proxy" >&2
    from="$(cd / && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    rm -rf "$dir"; mkdir -p "$SRC"
    cp -r "$from" "$dir"; chmod -R u+w "$dir"
    sed -i -E \
      -e '/k8s\.io\/sample-(cli-plugin|controller) => /d' \
      -e "s#^(\s+)(k8s\.io/[a-z0-9-]+) => \./staging/src/k8s\.io/[a-z0-9-]+\$#\1\2 => \2 $modver#" \
      "$dir/go.mod"
    grep -q 'staging/src' "$dir/go.mod" && die "go.mod rewrite left staging replaces in $dir/go.mod"
    touch "$dir/.rewritten"
  fi
  echo "$dir"
}

build_k8s_binary() {
  local name="$1" dir="$2" minor="${K8S_VERSION#v1.}"
  minor="${minor%%.*}"
  local pkg=k8s.io/component-base/version
  local ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  (cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 $NICE go build -trimpath -ldflags "$ldflags" \
    -o "$BIN/$name.tmp" "./cmd/$name")
  mv "$BIN/$name.tmp" "$BIN/$name"
}

# go install <module path>@<version> into a temp GOBIN, then into the cache under a fixed name.
go_install() {
  local name="$1" target="$2" ldflags="${3:-}" tmp
  tmp="$(mktemp -d)"
  CGO_ENABLED=0 GOBIN="$tmp" GOFLAGS=-mod=mod $NICE go install -trimpath -ldflags "-s -w $ldflags" "$target"
  mv "$tmp/$(basename "${target%@*}")" "$BIN/$name"
  rm -rf "$tmp"
}

build_local_go() {  # a std-only Go program from scripts/cluster/<dir>, static
  local name="$1" src="$2"
  (cd "$src" && CGO_ENABLED=0 GO111MODULE=off $NICE go build -trimpath -ldflags "-s -w" -o "$BIN/$name" .)
}

build_images() {
  # Image tarballs (docker-save format) made straight from the binaries: no registry, no docker needed.
  mkdir -p "$IMAGES"
  local py=python3
  [ -f "$IMAGES/pause.tar" ] || $py "$LIB/mkimage.py" --tag registry.k8s.io/pause:3.10 \
    --out "$IMAGES/pause.tar" --file "$BIN/pause:/pause" --entrypoint /pause
  [ -f "$IMAGES/coredns.tar" ] || $py "$LIB/mkimage.py" --tag "flts.local/coredns:$COREDNS_VERSION" \
    --out "$IMAGES/coredns.tar" --file "$BIN/coredns:/coredns" --entrypoint /coredns
  [ -f "$IMAGES/metrics-server.tar" ] || $py "$LIB/mkimage.py" \
    --tag "flts.local/metrics-server:$METRICS_SERVER_VERSION" --out "$IMAGES/metrics-server.tar" \
    --file "$BIN/metrics-server:/metrics-server" --dir /tmp --entrypoint /metrics-server
  [ -f "$IMAGES/smoke.tar" ] || $py "$LIB/mkimage.py" --tag flts.local/smoke:1 \
    --out "$IMAGES/smoke.tar" --file "$BIN/smoke:/smoke" --entrypoint /smoke
  return 0
}

cmd_build() {
  mkdir -p "$BIN" "$LOGS"
  ensure_packages
  command -v go >/dev/null || die "need Go >= 1.24 on PATH"
  local t0=$SECONDS dir="" b
  # Kubernetes: apiserver first (the longest, it downloads most modules), the rest share its build cache.
  for b in kube-apiserver kube-controller-manager kubelet kube-scheduler kube-proxy kubectl; do
    [ -x "$BIN/$b" ] && continue
    [ -n "$dir" ] || dir="$(k8s_source)"
    timed "$b" build_k8s_binary "$b" "$dir"
  done
  [ -x "$BIN/coredns" ] || timed coredns go_install coredns "github.com/coredns/coredns@$COREDNS_VERSION"
  [ -x "$BIN/metrics-server" ] || timed metrics-server go_install metrics-server \
    "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION"
  if [ ! -x "$BIN/helm" ]; then
    # Without these ldflags helm renders against Kubernetes 1.20 and reports no version.
    local minor="${K8S_VERSION#v1.}" hp=helm.sh/helm/v3
    timed helm go_install helm "$hp/cmd/helm@$HELM_VERSION" "-X $hp/internal/version.version=$HELM_VERSION \
      -X $hp/pkg/chartutil.k8sVersionMajor=1 -X $hp/pkg/chartutil.k8sVersionMinor=${minor%%.*}"
  fi
  [ -x "$BIN/registry" ] || timed registry go_install registry \
    "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION"
  [ -x "$BIN/pause" ] || timed pause build_local_go pause "$LIB/pause"
  [ -x "$BIN/smoke" ] || timed smoke build_local_go smoke "$LIB/smoke"
  build_images
  say "build done in $((SECONDS - t0)) s; binaries in $BIN, images in $IMAGES"
}

# ---------------------------------------------------------------------------------------------- cluster

# Addresses: the service and pod ranges must not overlap the host (192.0.2.0/24 here) or docker0 (172.17/16).
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
DNS_IP=10.96.0.10
POD_CIDR=10.244.0.0/24
ETCD_PORT="${FLTS_ETCD_PORT:-12379}"   # not 2379: leave the default free for anyone else's etcd
API_PORT="${FLTS_API_PORT:-6443}"
CNI_NET=flts-k8s
FW_COMMENT=flts-k8s                    # marks our FORWARD rules so `down` removes exactly those
CTR_SOCK="$STATE/containerd/containerd.sock"
PAUSE_IMAGE=registry.k8s.io/pause:3.10
# The node's image registry: loopback only, plain HTTP (Docker and containerd both allow that for localhost).
REGISTRY="localhost:${FLTS_REGISTRY_PORT:-5000}"
COMPONENTS=(registry containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

node_ip() { ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}'; }
node_name() { hostname | tr '[:upper:]' '[:lower:]'; }
kctl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
ctrk() { ctr --address "$CTR_SOCK" -n k8s.io "$@"; }

# wait_for DESCRIPTION TIMEOUT_S COMMAND...: poll every second, print progress every 10 s.
wait_for() {
  local what="$1" timeout="$2" t0=$SECONDS next=10; shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - t0 >= timeout )); then
      say "timed out after ${timeout} s waiting for $what"; return 1
    fi
    if (( SECONDS - t0 >= next )); then
      say "  still waiting for $what ($((SECONDS - t0)) s)"; next=$((next + 15))
    fi
    sleep 1
  done
  say "  $what after $((SECONDS - t0)) s"
}

pid_of() { local f="$STATE/pids/$1.pid"; [ -f "$f" ] && cat "$f"; }
alive() { local pid; pid="$(pid_of "$1")" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

# Start a component in its own session (it survives the caller, and a Ctrl-C to the caller does not reach it).
start() {
  local name="$1"; shift
  setsid "$@" > "$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$STATE/pids/$name.pid"
  sleep 0.5
  alive "$name" || { tail -20 "$STATE/logs/$name.log"; die "$name exited at once (log: $STATE/logs/$name.log)"; }
}

# ------------------------------------------------------------------ PKI (regenerated on every `up`)

pki_ca() {  # pki_ca NAME CN
  openssl genrsa -out "$1.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 3650 -out "$1.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
}

pki_cert() {  # pki_cert NAME CA SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
  local name="$1" ca="$2" subj="$3" eku="$4" san="${5:-}"
  openssl genrsa -out "$name.key" 2048 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -z "$san" ] || echo "subjectAltName=$san"
  } > "$name.ext"
  openssl req -new -key "$name.key" -subj "$subj" 2>/dev/null \
    | openssl x509 -req -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -days 365 \
        -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.ext"
}

kubeconfig() {  # kubeconfig FILE CERT_NAME
  local b64="base64 -w0"
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: flts
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $($b64 < "$STATE/pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $($b64 < "$STATE/pki/$2.crt")
    client-key-data: $($b64 < "$STATE/pki/$2.key")
contexts:
- name: flts
  context: {cluster: flts, user: $2}
current-context: flts
KC
  chmod 600 "$1"
}

make_pki() {
  local ip="$1" node="$2"
  rm -rf "$STATE/pki"; mkdir -p "$STATE/pki"; chmod 700 "$STATE/pki"
  (
    cd "$STATE/pki"
    pki_ca ca flts-kubernetes-ca
    pki_ca front-proxy-ca flts-front-proxy-ca
    pki_cert apiserver ca "/CN=kube-apiserver" serverAuth \
      "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$node,IP:127.0.0.1,IP:$SERVICE_IP,IP:$ip"
    pki_cert apiserver-kubelet-client ca "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
    pki_cert admin ca "/O=system:masters/CN=kubernetes-admin" clientAuth
    pki_cert controller-manager ca "/CN=system:kube-controller-manager" clientAuth
    pki_cert scheduler ca "/CN=system:kube-scheduler" clientAuth
    pki_cert kube-proxy ca "/CN=system:kube-proxy" clientAuth
    pki_cert kubelet ca "/O=system:nodes/CN=system:node:$node" clientAuth
    pki_cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" clientAuth
    # Service-account tokens are signed with this key pair.
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  local c
  for c in admin controller-manager scheduler kube-proxy kubelet; do
    kubeconfig "$STATE/$c.kubeconfig" "$c"
  done
}

# ------------------------------------------------------------------ host networking

host_network_setup() {
  modprobe br_netfilter 2>/dev/null || true
  # Pod -> Service -> pod on the same bridge needs bridged traffic to pass iptables (kube-proxy's rules).
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 || true
  # dockerd sets the FORWARD policy to DROP: without these, pod -> ClusterIP -> pod times out.
  local dir
  for dir in -i -o; do
    iptables -C FORWARD "$dir" cni0 -m comment --comment "$FW_COMMENT" -j ACCEPT 2>/dev/null \
      || iptables -I FORWARD 1 "$dir" cni0 -m comment --comment "$FW_COMMENT" -j ACCEPT
  done
}

write_containerd_config() {
  local d="$STATE/containerd"
  mkdir -p "$d/root" "$d/state" "$STATE/cni/net.d" "$STATE/cni/ipam"
  # Own socket, root and state: Docker's containerd (/run/docker/containerd) is never touched.
  # restrict_oom_score_adj: the kubelet's oomScoreAdj=-998 for sandboxes fails without CAP_SYS_RESOURCE.
  cat > "$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[debug]
  address = "$d/debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  enable_selinux = false
  # Pod network namespaces under our state dir, not /var/run/netns: one place to unmount on down.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    # Containers run from the unpacked snapshots: a pulled layer's blob is dropped (our images are GBs).
    discard_unpacked_layers = true
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$REGISTRY"]
    endpoint = ["http://$REGISTRY"]
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
    max_conf_num = 1
TOML
  # One bridge network for all pods; ipMasq for traffic leaving the node, hairpin so a pod reaches
  # itself through its own Service.
  cat > "$STATE/cni/net.d/10-$CNI_NET.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NET",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
               "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$STATE/cni/ipam"}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
}

write_component_configs() {
  local ip="$1" node="$2"
  cat > "$STATE/kubelet-config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$STATE/pki/ca.crt"}
authorization: {mode: Webhook}
containerRuntimeEndpoint: "unix://$CTR_SOCK"
# This machine: cgroup v1 with the cgroupfs driver (no systemd), swap allowed.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDNS: ["$DNS_IP"]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: "$STATE/pod-logs"
# Pulls from the local registry are cheap but the images are GBs: never garbage-collect them; evict only
# when nearly full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "2%", imagefs.available: "2%"}
maxPods: 110
YAML
  cat > "$STATE/kube-proxy-config.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: "$POD_CIDR"
hostnameOverride: "$node"
clientConnection: {kubeconfig: "$STATE/kube-proxy.kubeconfig"}
metricsBindAddress: 127.0.0.1:10249
# Leave the host's conntrack sysctls alone (kube-proxy would otherwise try to raise them).
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
}

# ------------------------------------------------------------------ up

images_present() {  # images_present REF...: all already in containerd's k8s.io namespace?
  local have r
  have="$(ctrk images ls -q 2>/dev/null)"
  for r in "$@"; do grep -qx "$r" <<<"$have" || return 1; done
}

import_tarball() {
  say "importing $(basename "$1") into containerd (k8s.io)"
  ctrk images import "$1" >/dev/null
}

cluster_ready() { kctl get --raw=/readyz >/dev/null 2>&1 && [ "$(kctl get nodes --no-headers 2>/dev/null | awk '{print $2}')" = Ready ]; }

cmd_up() {
  local t0=$SECONDS ip node p
  ip="$(node_ip)"; node="$(node_name)"
  [ -n "$ip" ] || die "cannot find this machine's IP (ip route get 1.1.1.1)"
  if alive kube-apiserver && alive kubelet && cluster_ready; then
    say "cluster already up (kubeconfig: $KUBECONFIG_PATH)"; return 0
  fi
  # A half-started or crashed cluster: clean up first so `up` always starts from nothing.
  cmd_down --quiet
  for p in containerd etcd; do command -v "$p" >/dev/null || die "$p missing: run '$0 build'"; done
  mkdir -p "$STATE"/{logs,pids,pod-logs,kubelet}
  rm -rf "$STATE/etcd"   # a fresh cluster every time; containerd's image store is kept (imports are slow)
  say "node $node at $ip; state in $STATE"

  say "PKI and kubeconfigs"
  make_pki "$ip" "$node"
  write_containerd_config
  write_component_configs "$ip" "$node"
  host_network_setup

  say "starting the image registry on $REGISTRY (storage $STATE/registry, kept across up/down)"
  write_registry_config
  start registry "$BIN/registry" serve "$STATE/registry.yml"
  wait_for "registry" 30 curl -fsS "http://$REGISTRY/v2/"

  say "starting containerd (socket $CTR_SOCK)"
  start containerd containerd --config "$STATE/containerd/config.toml"
  wait_for "containerd" 60 ctrk version
  images_present "$PAUSE_IMAGE" || import_tarball "$IMAGES/pause.tar"
  images_present "flts.local/coredns:$COREDNS_VERSION" \
    || import_tarball "$IMAGES/coredns.tar"
  images_present "flts.local/metrics-server:$METRICS_SERVER_VERSION" \
    || import_tarball "$IMAGES/metrics-server.tar"

  say "starting etcd on 127.0.0.1:$ETCD_PORT"
  start etcd etcd --name flts --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "flts=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --listen-metrics-urls "http://127.0.0.1:$((ETCD_PORT + 2))"
  wait_for "etcd" 60 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

  local pki="$STATE/pki"
  say "starting kube-apiserver on :$API_PORT"
  # The --requestheader-*/--proxy-client-* flags make the aggregation layer work (metrics-server).
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --advertise-address="$ip" --secure-port="$API_PORT" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --client-ca-file="$pki/ca.crt" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-username-headers=X-Remote-User \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" \
    --proxy-client-key-file="$pki/front-proxy-client.key" \
    --enable-aggregator-routing=true
  wait_for "kube-apiserver /readyz" 180 kctl get --raw=/readyz

  say "starting kube-controller-manager, kube-scheduler"
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/sa.key" \
    --use-service-account-credentials=true \
    --horizontal-pod-autoscaler-sync-period=10s
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false

  say "starting kubelet and kube-proxy"
  start kubelet "$BIN/kubelet" --config="$STATE/kubelet-config.yaml" \
    --kubeconfig="$STATE/kubelet.kubeconfig" --root-dir="$STATE/kubelet" \
    --hostname-override="$node" --node-ip="$ip"
  start kube-proxy "$BIN/kube-proxy" --config="$STATE/kube-proxy-config.yaml"
  wait_for "node $node Ready" 180 cluster_ready

  say "deploying CoreDNS and metrics-server"
  sed -e "s#@COREDNS_IMAGE@#flts.local/coredns:$COREDNS_VERSION#" \
      -e "s#@METRICS_SERVER_IMAGE@#flts.local/metrics-server:$METRICS_SERVER_VERSION#" \
      "$LIB/addons.yaml" > "$STATE/addons.yaml"
  wait_for "CoreDNS and metrics-server applied" 120 kctl apply -f "$STATE/addons.yaml"
  wait_for "CoreDNS ready" 180 kctl -n kube-system rollout status deploy/coredns --timeout=5s
  wait_for "DNS answers from a pod network" 60 dns_answers
  wait_for "metrics-server ready" 180 kctl -n kube-system rollout status deploy/metrics-server --timeout=5s
  wait_for "kubectl top node" 180 kctl top node
  make_volumes
  say "cluster up in $((SECONDS - t0)) s"
  echo "up $((SECONDS - t0))" >> "$LOGS/up-times.txt"
  cmd_env_hint
}

# Storage for StatefulSets: a default StorageClass without a provisioner and PersistentVolumes on
# host directories made here (a single node needs nothing more). Each PVC binds one free PV.
PV_COUNT="${FLTS_PV_COUNT:-12}"
make_volumes() {
  local i dir
  rm -rf "$STATE/volumes"
  {
    cat <<SC
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-hostpath
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
SC
    for i in $(seq -w 1 "$PV_COUNT"); do
      dir="$STATE/volumes/pv-$i"
      # World-writable: hostPath volumes ignore fsGroup, and images run as different non-root users.
      mkdir -p "$dir" && chmod 0777 "$dir"
      cat <<PV
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: local-pv-$i}
spec:
  capacity: {storage: 50Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local-hostpath
  hostPath: {path: "$dir", type: Directory}
PV
    done
  } > "$STATE/volumes.yaml"
  # Applied until it succeeds: a loaded disk can make etcd time a write out ("etcdserver: request timed out").
  wait_for "default StorageClass local-hostpath with $PV_COUNT hostPath PersistentVolumes" 120 \
    kctl apply -f "$STATE/volumes.yaml"
}

# CoreDNS answers for kubernetes.default through the kube-dns Service (host -> ClusterIP -> pod: kube-proxy).
dns_answers() {
  python3 - "$DNS_IP" <<'PY'
import socket, struct, sys
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in "kubernetes.default.svc.cluster.local".split(".")) + b"\0"
q += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(q, (sys.argv[1], 53))
r = s.recv(512)
sys.exit(0 if struct.unpack(">H", r[6:8])[0] >= 1 else 1)
PY
}

cmd_env_hint() {
  echo "kubeconfig: $KUBECONFIG_PATH"
  echo "use it:     eval \"\$($0 env)\"   (sets KUBECONFIG and puts kubectl/helm on PATH)"
}

cmd_env() {
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
  echo "export PATH=$BIN:\$PATH"
  echo "export CONTAINERD_ADDRESS=$CTR_SOCK CONTAINERD_NAMESPACE=k8s.io"
}

# ------------------------------------------------------------------ down

# Stop recorded components together: TERM, up to 5 s, then KILL (kube-apiserver 1.33 stops serving at once
# but often lingers; nothing of the cluster is kept, so waiting longer buys nothing).
# Checks each PID still runs that program before signalling it.
stop_components() {
  local name pid exe pids=() i
  for name in "$@"; do
    pid="$(pid_of "$name" || true)"
    rm -f "$STATE/pids/$name.pid"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || continue
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
    case "$exe" in
      */"$name"|*/"$name"" (deleted)") ;;
      *) say "pid $pid is no longer $name ($exe): not killing it"; continue ;;
    esac
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  for i in $(seq 20); do
    local running=""
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && { running=$pid; break; }; done
    [ -z "$running" ] && return 0
    sleep 0.25
  done
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || continue
    say "  $(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)") (pid $pid) still running 5 s after TERM: KILL"
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# PIDs of processes started for our containerd (its shims carry our socket path on their command line).
our_shims() {
  local d
  for d in /proc/[0-9]*; do
    { tr '\0' ' ' < "$d/cmdline"; } 2>/dev/null | grep -qF -- "-address $CTR_SOCK " && echo "${d#/proc/}"
  done
  return 0
}

remove_iptables_chains() {  # every KUBE-* and CNI-* chain (kubelet, kube-proxy, CNI), in every table
  local ipt table rule chain
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in filter nat mangle raw; do
      "$ipt" -t "$table" -S >/dev/null 2>&1 || continue
      # First the jumps from other chains (built-in, Docker's) into ours, then our chains themselves.
      "$ipt"-save -t "$table" 2>/dev/null | grep -E '^-A ' | grep -vE '^-A (KUBE-|CNI-)' \
        | grep -E -- '-j (KUBE-|CNI-)' \
        | while read -r rule; do eval "$ipt -t $table ${rule/-A /-D }" 2>/dev/null || true; done || true
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE-|CNI-)/ {print $2}'); do
        "$ipt" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE-|CNI-)/ {print $2}'); do
        "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
  # Our FORWARD accepts for cni0 (identified by their comment).
  while iptables -D FORWARD -i cni0 -m comment --comment "$FW_COMMENT" -j ACCEPT 2>/dev/null; do :; done
  while iptables -D FORWARD -o cni0 -m comment --comment "$FW_COMMENT" -j ACCEPT 2>/dev/null; do :; done
}

our_mounts() {  # mount points under our state dir, and the pod network namespaces containerd pinned
  awk '{print $5}' /proc/self/mountinfo | grep -E "^($STATE(/|$)|/run/netns/cni-|/var/run/netns/cni-)" \
    | awk '{print length, $0}' | sort -rn | cut -d' ' -f2- || true
}

# Containers whose containerd died (a crashed or killed session) keep running without it: kill what is
# left in the kubelet's pod cgroups (Docker's containers live under .../docker, never touched).
kill_pod_processes() {
  local f
  for f in /sys/fs/cgroup/*/kubepods/cgroup.procs /sys/fs/cgroup/*/kubepods/*/cgroup.procs \
           /sys/fs/cgroup/*/kubepods/*/*/cgroup.procs /sys/fs/cgroup/*/kubepods/*/*/*/cgroup.procs; do
    [ -f "$f" ] && xargs -r kill -KILL < "$f" 2>/dev/null || true
  done
}

remove_cgroups() {  # the kubelet's kubepods hierarchy in each cgroup v1 controller (empty once pods are gone)
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice /sys/fs/cgroup/kubepods; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

cmd_down() {
  local quiet="" purge="" t0=$SECONDS pid m id a
  for a in "$@"; do
    case "$a" in --quiet) quiet=--quiet ;; --purge) purge=1 ;; *) die "down: unknown option $a" ;; esac
  done
  [ "$quiet" = --quiet ] || say "stopping the cluster"
  mkdir -p "$STATE/pids"
  # The kubelet first, so nothing restarts containers; then the control plane.
  stop_components kubelet kube-proxy
  stop_components kube-controller-manager kube-scheduler kube-apiserver
  stop_components etcd   # after the apiserver: it drains its requests against etcd before exiting
  [ "$quiet" = --quiet ] || say "  processes stopped ($((SECONDS - t0)) s)"
  # Containers: kill and delete through our containerd while it still runs (in parallel: one ctr call each).
  if alive containerd; then
    local ids
    ids="$(ctrk tasks ls -q 2>/dev/null || true)"
    for id in $ids; do ctrk tasks kill -s SIGKILL "$id" >/dev/null 2>&1 & done
    wait
    for id in $ids; do ctrk tasks delete -f "$id" >/dev/null 2>&1 & done
    wait
    for id in $(ctrk containers ls -q 2>/dev/null); do ctrk containers delete "$id" >/dev/null 2>&1 & done
    wait
    [ "$quiet" = --quiet ] || say "  $(wc -w <<<"$ids") containers removed ($((SECONDS - t0)) s)"
  fi
  stop_components containerd registry
  for pid in $(our_shims); do kill -KILL "$pid" 2>/dev/null || true; done
  kill_pod_processes
  # Mounts: kubelet's bind mount of its root dir, pod volumes, container rootfs/shm, pinned netns.
  for m in $(our_mounts); do umount -l "$m" 2>/dev/null || true; done
  for m in /run/netns/cni-*; do [ -e "$m" ] && rm -f "$m"; done
  ip link show cni0 >/dev/null 2>&1 && ip link delete cni0
  remove_iptables_chains
  remove_cgroups
  # Container state (not the image store) and IP allocations go, so the next `up` starts clean.
  rm -rf "$STATE/containerd/state" "$STATE/cni/ipam" "$STATE/volumes" /var/lib/cni/results/"$CNI_NET"-* 2>/dev/null || true
  # --purge: the pulled images and the registry's storage too (GBs; the next push and pull move them again).
  if [ -n "$purge" ]; then rm -rf "$STATE/containerd/root" "$STATE/registry" && say "  image stores removed"; fi
  [ "$quiet" = --quiet ] || { say "down in $((SECONDS - t0)) s"; check_clean; }
}

# Report anything of ours still present; non-zero when something is left.
check_clean() {
  local left=0 c
  for c in "${COMPONENTS[@]}"; do alive "$c" && { echo "left: process $c"; left=1; }; done
  [ -z "$(our_shims)" ] || { echo "left: containerd shims $(our_shims | tr '\n' ' ')"; left=1; }
  [ -z "$(our_mounts)" ] || { echo "left: mounts"; our_mounts; left=1; }
  ip link show cni0 >/dev/null 2>&1 && { echo "left: cni0 bridge"; left=1; }
  if iptables-save 2>/dev/null | grep -qE '(KUBE-|CNI-)|flts-k8s'; then echo "left: iptables rules"; left=1; fi
  if ip6tables-save 2>/dev/null | grep -qE '(KUBE-|CNI-)'; then echo "left: ip6tables rules"; left=1; fi
  [ "$left" = 0 ] && say "clean: no processes, shims, mounts, cni0 or KUBE-/CNI- chains left"
  return "$left"
}

# ------------------------------------------------------------------ status, import

cmd_status() {
  local c pid
  for c in "${COMPONENTS[@]}"; do
    pid="$(pid_of "$c" || true)"
    if alive "$c"; then printf '%-24s running (pid %s)\n' "$c" "$pid"; else printf '%-24s stopped\n' "$c"; fi
  done
  echo "kubeconfig: $KUBECONFIG_PATH"
  if alive kube-apiserver; then kctl get nodes -o wide 2>&1 || true; kctl get pods -A 2>&1 || true; fi
}

# Push docker images to the node's registry as localhost:5000/<name>: only layers the registry lacks are
# sent (the first push of a PyTorch image compresses GBs once; a code change sends its top layers). Pods
# pull them with the registry prefix (the chart's image.registry), and containerd fetches only the layers
# whose snapshots it lacks.
cmd_push() {
  [ $# -gt 0 ] || die "usage: $0 push <docker image>..."
  alive registry || die "the node's registry is not running: '$0 up' first"
  local image target t0=$SECONDS t1 log="$STATE/logs/push.log"
  for image in "$@"; do
    docker image inspect "$image" >/dev/null || die "no docker image $image"
    target="$REGISTRY/$image"
    t1=$SECONDS
    docker tag "$image" "$target"
    docker push "$target" >>"$log" 2>&1 || { tail -5 "$log"; die "docker push $target failed (log: $log)"; }
    say "  $image pushed in $((SECONDS - t1)) s"
  done
  say "pushed in $((SECONDS - t0)) s"
}

write_registry_config() {
  mkdir -p "$STATE/registry"
  cat > "$STATE/registry.yml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: "$STATE/registry"}
  delete: {enabled: true}
http:
  addr: "$REGISTRY"
YAML
}

# ------------------------------------------------------------------ smoke

# Run a one-shot pod from the smoke image; prints its log, fails when the pod fails.
smoke_pod() {  # smoke_pod NAME TIMEOUT_S ARG...
  local name="$1" timeout="$2"; shift 2
  local args; args="$(printf '"%s",' "$@")"
  kctl -n flts-smoke delete pod "$name" --ignore-not-found --wait=true >/dev/null
  kctl -n flts-smoke apply -f - >/dev/null <<POD
apiVersion: v1
kind: Pod
metadata: {name: $name, namespace: flts-smoke}
spec:
  restartPolicy: Never
  containers:
    - name: c
      image: flts.local/smoke:1
      imagePullPolicy: Never
      args: [${args%,}]
      securityContext: {runAsNonRoot: true, runAsUser: 65534, allowPrivilegeEscalation: false}
POD
  local t0=$SECONDS phase=""
  while (( SECONDS - t0 < timeout )); do
    phase="$(kctl -n flts-smoke get pod "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    case "$phase" in Succeeded|Failed) break ;; esac
    sleep 1
  done
  kctl -n flts-smoke logs "$name" 2>&1 | sed "s/^/    [$name] /"
  [ "$phase" = Succeeded ] || { say "pod $name: ${phase:-no phase} after $((SECONDS - t0)) s"; return 1; }
}

hpa_has_metrics() {
  local cur
  cur="$(kctl -n flts-smoke get hpa web -o jsonpath='{.status.currentMetrics[0].resource.current.averageUtilization}' 2>/dev/null)"
  [ -n "$cur" ]
}

hpa_scaled_out() {
  [ "$(kctl -n flts-smoke get deploy web -o jsonpath='{.status.readyReplicas}' 2>/dev/null || echo 0)" -gt 1 ]
}

cmd_smoke() {
  local t0=$SECONDS
  alive kube-apiserver || die "cluster not up: '$0 up' first"
  images_present flts.local/smoke:1 || import_tarball "$IMAGES/smoke.tar"
  say "smoke: Deployment + Service + HPA in namespace flts-smoke"
  kctl apply -f "$LIB/smoke.yaml" >/dev/null
  wait_for "deployment web ready" 120 kctl -n flts-smoke rollout status deploy/web --timeout=5s
  say "smoke: a pod resolves web.flts-smoke.svc.cluster.local through cluster DNS and gets an answer"
  # kube-proxy programs the Service a moment after its endpoints are ready (seconds after a busy test):
  # until then the ClusterIP refuses connections, so the client gets three tries.
  local try
  for try in 1 2 3; do
    smoke_pod dns-client 90 get http://web.flts-smoke.svc.cluster.local/ && break
    [ "$try" -lt 3 ] || die "no answer through the Service after 3 tries"
    sleep 5
  done
  wait_for "HPA reading metrics" 180 hpa_has_metrics
  kctl -n flts-smoke get hpa web
  say "smoke: load from a pod (burn 50 ms per request) until the HPA scales web out"
  smoke_pod load 200 load "http://web.flts-smoke.svc.cluster.local/burn?ms=50" 150 &
  local loader=$!
  wait_for "HPA scaling web to >1 ready replicas" 180 hpa_scaled_out || { wait "$loader" || true; return 1; }
  kctl -n flts-smoke get hpa,deploy web
  say "smoke: the new replicas answer through the Service"
  smoke_pod dns-client 90 get http://web.flts-smoke.svc.cluster.local/
  kctl top pods -n flts-smoke || true
  kctl delete namespace flts-smoke --wait=false >/dev/null
  kill "$loader" 2>/dev/null || true
  wait "$loader" 2>/dev/null || true
  say "smoke passed in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------------------------- main

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

main() {
  local cmd="${1:-}"; shift || true
  case "$cmd" in
    build) cmd_build "$@" ;;
    up) cmd_build && cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    push) cmd_push "$@" ;;
    smoke) cmd_smoke "$@" ;;
    env) cmd_env ;;
    -h|--help|help|"") usage ;;
    *) usage; exit 2 ;;
  esac
}

# Sourcing the file (tests, debugging) defines the functions without running a command.
[[ "${BASH_SOURCE[0]}" != "$0" ]] || main "$@"
