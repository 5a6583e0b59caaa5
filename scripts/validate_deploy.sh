#!/usr/bin/env bash
# Validate the Helm chart offline: helm lint, helm template and kubeconform (strict) with
# the default values and with every helm/prodloop/ci/*-values.yaml.
#
# Tools come from the Go module proxy (go install), into a cache:
#   helm        helm.sh/helm/v3/cmd/helm                     (first build: ~2 minutes)
#   kubeconform github.com/yannh/kubeconform/cmd/kubeconform
# helm is linked with the -X flags of its own Makefile: without them a `go install`ed helm
# assumes Kubernetes v1.20 when no cluster or --kube-version is given, and the chart's
# kubeVersion (>=1.25) fails.  The checks below pass --kube-version explicitly anyway.
# kubeconform's Kubernetes JSON Schemas normally come from GitHub; here they are built from
# the OpenAPI document of the k8s.io/kubernetes module and the prometheus-operator's CRDs
# (both from the Go module proxy) by scripts/k8s_json_schemas.py.
#
# Environment: PRODLOOP_TOOLS_DIR (default ~/.cache/prodloop/tools), PYTHON (default .venv/bin/python).
# Exit status: 0 valid; 1 invalid; 2 a tool could not be installed (the reason is printed).
set -euo pipefail

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
K8S_VERSION=1.36.3                 # the Kubernetes whose OpenAPI schemas we validate against
PROM_OPERATOR_VERSION=v0.85.0      # ServiceMonitor CRD

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/helm/prodloop"
TOOLS="${PRODLOOP_TOOLS_DIR:-$HOME/.cache/prodloop/tools}"
SCHEMAS="$TOOLS/k8s-schemas/v$K8S_VERSION-prom$PROM_OPERATOR_VERSION"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3

die_install() { echo "validate_deploy: cannot install $1: $2" >&2; exit 2; }

install_tool() {  # name version package [ldflags]
    local name=$1 version=$2 pkg=$3 ldflags=${4:-} stamp="$TOOLS/.$1.version"
    if [ -x "$TOOLS/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version $ldflags" ]; then
        return 0
    fi
    command -v go >/dev/null || die_install "$name" "'go' is not on PATH (Go is needed to build it)"
    echo "validate_deploy: go install $pkg@$version (cached in $TOOLS)" >&2
    local log
    log="$(mktemp)"
    if ! GOBIN="$TOOLS" GOFLAGS="${GOFLAGS:-} -buildvcs=false" nice -n 10 go install -ldflags "$ldflags" "$pkg@$version" >"$log" 2>&1; then
        tail -20 "$log" >&2
        rm -f "$log"
        die_install "$name" "go install $pkg@$version failed (see above)"
    fi
    rm -f "$log"
    echo "$version $ldflags" >"$stamp"
}

module_dir() {  # module@version -> its directory in the module cache
    local out
    out="$(cd "$TOOLS" && go mod download -json "$1" 2>&1)" || die_install "$1" "go mod download failed: $out"
    "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])' <<<"$out"
}

helm_ldflags() {  # as helm's Makefile: its version, and the Kubernetes of its client-go (v0.N -> 1.N)
    local dir minor
    dir="$(module_dir "helm.sh/helm/v3@$HELM_VERSION")"
    minor="$(sed -n 's|^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*|\1|p' "$dir/go.mod")"
    [ -n "$minor" ] || die_install helm "no k8s.io/client-go version in $dir/go.mod"
    local x=helm.sh/helm/v3
    echo "-X $x/internal/version.version=$HELM_VERSION" \
        "-X $x/pkg/chartutil.k8sVersionMajor=1 -X $x/pkg/chartutil.k8sVersionMinor=$minor" \
        "-X $x/pkg/lint/rules.k8sVersionMajor=1 -X $x/pkg/lint/rules.k8sVersionMinor=$minor"
}

mkdir -p "$TOOLS"
ldflags="$(helm_ldflags)"
install_tool helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "$ldflags"
install_tool kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform
HELM="$TOOLS/helm"
KUBECONFORM="$TOOLS/kubeconform"

if [ ! -f "$SCHEMAS/.complete" ]; then
    k8s_dir="$(module_dir "k8s.io/kubernetes@v$K8S_VERSION")"
    prom_dir="$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION")"
    rm -rf "$SCHEMAS"
    "$PYTHON" "$ROOT/scripts/k8s_json_schemas.py" "$SCHEMAS" \
        --swagger "$k8s_dir/api/openapi-spec/swagger.json" \
        --crd "$prom_dir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" \
        || die_install "Kubernetes JSON schemas" "scripts/k8s_json_schemas.py failed"
    touch "$SCHEMAS/.complete"
fi

status=0
check() {  # label, helm args...
    local label=$1
    shift
    echo "== $label" >&2
    if ! "$HELM" lint --strict "$CHART" --kube-version "$K8S_VERSION" "$@" >&2; then
        echo "FAIL helm lint ($label)" >&2
        status=1
        return
    fi
    local rendered
    if ! rendered="$("$HELM" template prodloop "$CHART" --namespace prodloop --kube-version "$K8S_VERSION" "$@")"; then
        echo "FAIL helm template ($label)" >&2
        status=1
        return
    fi
    if ! "$KUBECONFORM" -strict -summary -kubernetes-version "$K8S_VERSION" \
        -schema-location "$SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json" - <<<"$rendered" >&2; then
        echo "FAIL kubeconform ($label)" >&2
        status=1
        return
    fi
    echo "ok $label" >&2
}

check "default values"
for values in "$CHART"/ci/*-values.yaml; do
    check "$(basename "$values")" -f "$values"
done
exit $status
