#!/bin/sh
# The chain's namespace, created when missing (the server image, unlike the dev server, starts without one).
# TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE are the Temporal CLI's own variables.
set -eu
namespace=${TEMPORAL_NAMESPACE:-default}
if temporal operator namespace describe --namespace "$namespace" >/dev/null 2>&1; then
  echo "create-namespace: $namespace exists"
else
  temporal operator namespace create --namespace "$namespace" --retention "${NAMESPACE_RETENTION:-72h}"
  echo "create-namespace: $namespace created"
fi
