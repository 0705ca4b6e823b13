#!/usr/bin/env bash
# A local Kubernetes cluster with Kubeflow Pipelines and artlora, and the demo pipeline submitted to it.
# Needs Docker, kind v0.32, kubectl 1.32 or newer, and the project's environment (`make test` or `make demo` builds
# .venv). Each step says what it waits for; when one fails, the script prints where to look. Idempotent: run it
# again after fixing what failed. k8s/kind/down.sh removes it all.
set -Eeuo pipefail  # -E: the ERR trap below also fires inside functions

cd "$(dirname "$0")/../.."
CLUSTER=artlora
KFP_VERSION=2.17.0  # Kubeflow Pipelines standalone, installed from its release's kustomize manifests
OVERLAY=k8s/overlays/kind
STATE=.artlora/kind  # port-forward logs and process ids (.artlora is git-ignored)
mkdir -p "$STATE"

STEP="starting"
HINT="docker ps; kind get clusters"
on_error() {
    echo >&2
    echo "up.sh failed in: $STEP" >&2
    echo "to see why: $HINT" >&2
    echo "pods that are not running:" >&2
    kubectl get pods -A --field-selector=status.phase!=Running,status.phase!=Succeeded 2>&1 | sed 's/^/  /' >&2 || true
}
trap on_error ERR

step() {  # step NAME HINT: announce a step and what to look at if it fails
    STEP=$1
    HINT=$2
    echo
    echo "== $STEP"
}

step "checking the tools" "install what is missing"
for tool in docker kind kubectl make curl; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; false; }
done
KIND_VERSION=$(kind version)
[[ $KIND_VERSION == *" v0.32."* ]] || { echo "kind v0.32 is needed for the pinned node image: $KIND_VERSION" >&2; false; }
test -x .venv/bin/artlora || { echo "missing .venv/bin/artlora: run make demo or make test once" >&2; false; }

step "creating the kind cluster '$CLUSTER' (waits up to 3 min for the node to be Ready)" \
    "kind export logs --name $CLUSTER $STATE/kind-logs"
if [[ $'\n'$(kind get clusters)$'\n' == *$'\n'$CLUSTER$'\n'* ]]; then
    echo "exists"
else
    kind create cluster --config k8s/kind/cluster.yaml --wait 180s
fi
kubectl config use-context "kind-$CLUSTER"

# The compiled pipeline's train task asks for one nvidia.com/gpu. kind has no GPU, so the node advertises one
# (an extended resource, as the Kubernetes docs show for any device): the scheduler places the task, and it trains
# the tiny model on the CPU. Nothing else on the node can use it.
step "advertising one GPU on the node for the train task" "kubectl describe node $CLUSTER-control-plane"
kubectl patch node "$CLUSTER-control-plane" --subresource=status --type=json \
    -p '[{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "1"}]'

step "installing Kubeflow Pipelines $KFP_VERSION (waits up to 15 min for every deployment in kubeflow)" \
    "kubectl -n kubeflow get pods; kubectl -n kubeflow describe pod POD; kubectl -n kubeflow logs POD"
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$KFP_VERSION"
kubectl wait --for=condition=Established --timeout=60s crd/applications.app.k8s.io
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$KFP_VERSION"
kubectl -n kubeflow wait --for=condition=Available deployment --all --timeout=15m

step "building the artlora image and loading it into the node (minutes: torch with its CUDA wheels)" \
    "docker images; docker exec $CLUSTER-control-plane crictl images"
IMAGE=$(make -s image-name)
make image
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "writing random credentials for this cluster (kept in $OVERLAY/*.env and seaweedfs-security/, git-ignored)" "ls -l $OVERLAY"
random_hex() { .venv/bin/python -c "import secrets; print(secrets.token_hex($1))"; }  # $1 bytes
if [ ! -f "$OVERLAY/s3.env" ]; then
    printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$(random_hex 10)" "$(random_hex 20)" >"$OVERLAY/s3.env"
fi
if [ ! -f "$OVERLAY/mlflow.env" ]; then
    printf 'MLFLOW_TRACKING_USERNAME=admin\nMLFLOW_TRACKING_PASSWORD=%s\nMLFLOW_FLASK_SERVER_SECRET_KEY=%s\n' \
        "$(random_hex 16)" "$(random_hex 32)" >"$OVERLAY/mlflow.env"
fi
if [ ! -f "$OVERLAY/postgres.env" ]; then
    printf 'POSTGRES_PASSWORD=%s\n' "$(random_hex 16)" >"$OVERLAY/postgres.env"
fi
# SeaweedFS's security.toml and certificates (kept when already there)
.venv/bin/artlora services seaweedfs-secret "$OVERLAY/seaweedfs-security" >/dev/null

step "applying the kind overlay (waits up to 10 min for SeaweedFS, PostgreSQL and MLflow to be ready)" \
    "kubectl -n artlora get pods; kubectl -n artlora logs deploy/seaweedfs; kubectl -n artlora logs deploy/mlflow; kubectl -n artlora logs statefulset/postgres"
kubectl apply -k "$OVERLAY"
kubectl -n artlora rollout status statefulset/postgres --timeout=10m
kubectl -n artlora rollout status deployment/seaweedfs --timeout=10m
kubectl -n artlora rollout status deployment/mlflow --timeout=10m

step "seeding the demo's sample artworks and tiny model into the store (waits up to 15 min for the Job)" \
    "kubectl -n kubeflow logs job/artlora-demo-seed; kubectl -n kubeflow describe job artlora-demo-seed"
kubectl -n kubeflow wait --for=condition=Complete job/artlora-demo-seed --timeout=15m

step "forwarding the KFP API (8888), the KFP UI (8080) and MLflow (5000) to localhost" "cat $STATE/*.log"
forward() {  # forward NAMESPACE SERVICE LOCAL:REMOTE
    local log="$STATE/$2.log"
    if [ -f "$STATE/$2.pid" ] && kill -0 "$(cat "$STATE/$2.pid")" 2>/dev/null; then
        return
    fi
    kubectl -n "$1" port-forward "svc/$2" "$3" >"$log" 2>&1 &
    echo $! >"$STATE/$2.pid"
}
forward kubeflow ml-pipeline 8888:8888
forward kubeflow ml-pipeline-ui 8080:80
forward artlora mlflow 5000:5000
for attempt in $(seq 30); do
    curl -sf http://localhost:8888/apis/v2beta1/healthz >/dev/null && break
    [ "$attempt" -lt 30 ] || { echo "the KFP API did not answer on localhost:8888 within 30 s" >&2; false; }
    sleep 1
done

step "submitting the demo pipeline" \
    "the run in the KFP UI at http://localhost:8080; kubectl -n kubeflow get pods; kubectl -n kubeflow logs POD -c main"
.venv/bin/artlora pipeline submit --host http://localhost:8888 --config "$OVERLAY/config.yaml"

trap - ERR
cat <<DONE

Up. The demo run trains the tiny model on the CPU (minutes).
  KFP UI     http://localhost:8080   (the run, its tasks' logs)
  MLflow     http://localhost:5000   (experiment artlora-demo, model demo-style)
  pods       kubectl -n kubeflow get pods; kubectl -n artlora get pods
Port-forwards run in the background (logs in $STATE); k8s/kind/down.sh stops them and deletes the cluster.
DONE
