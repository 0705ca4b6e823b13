#!/usr/bin/env bash
# Undoes k8s/kind/up.sh: stops its port-forwards and deletes the kind cluster with everything in it. The
# credentials it wrote (k8s/overlays/kind/*.env) stay, for the next cluster.
set -euo pipefail

cd "$(dirname "$0")/../.."
CLUSTER=artlora
STATE=.artlora/kind

for pid_file in "$STATE"/*.pid; do
    [ -e "$pid_file" ] || continue
    kill "$(cat "$pid_file")" 2>/dev/null || true  # already gone when the cluster went away first
    rm -f "$pid_file"
done
kind delete cluster --name "$CLUSTER"
