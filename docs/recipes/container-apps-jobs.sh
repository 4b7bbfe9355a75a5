#!/bin/sh
# Nightly backup of every vault of the subscriptions with Azure Container Apps jobs, spread
# over SHARDS jobs that run in parallel with no coordinator: job I runs
# `coldvault backup --all-subscriptions --shard I/SHARDS`, which takes the vaults whose stable
# hash (of the vault's resource id) falls in shard I, so every vault is backed up by exactly
# one job, and a vault created or deleted moves no other vault to another job.
# Why one job per shard: Container Apps gives the parallel replicas of one job no index (a
# Kubernetes Indexed Job gives JOB_COMPLETION_INDEX, see kubernetes-indexed-job.yaml), so
# replicas of one job could not tell their shards apart; SHARDS jobs on one schedule run in
# parallel, each with parallelism 1.
# Sign-in: a user-assigned managed identity shared by the jobs, with Reader on the
# subscriptions (to list their vaults through Azure Resource Manager) and the backup
# permissions on every vault (README.md, "Permissions"); Container Apps gives the replica
# IDENTITY_ENDPOINT and IDENTITY_HEADER, and AZURE_CLIENT_ID names the identity.
# Archives go to an Azure Files share registered in the environment as `coldvault-backups`,
# one per vault, named after it. A job whose shard holds a partial or failed vault exits 3
# (named in its log) and its execution shows as failed.
# The image is the repository's Dockerfile, pushed to a registry the environment pulls from.
# Run once with the Azure CLI signed in (again after changing SHARDS; delete jobs beyond it):
#   RESOURCE_GROUP=ops ENVIRONMENT_ID=/subscriptions/…/managedEnvironments/ops-env \
#   IDENTITY_ID=/subscriptions/…/userAssignedIdentities/coldvault IDENTITY_CLIENT_ID=… \
#   IMAGE=myregistry.azurecr.io/coldvault:0.1.0 RECIPIENT=age1… SHARDS=4 \
#   sh container-apps-jobs.sh
set -eu
shards=${SHARDS:-4}
location=${LOCATION:-westeurope}
schedule=${SCHEDULE:-17 2 * * *}
spec=$(mktemp)
trap 'rm -f "$spec"' EXIT
i=0
while [ "$i" -lt "$shards" ]; do
  cat > "$spec" <<EOF
location: $location
identity:
  type: UserAssigned
  userAssignedIdentities:
    "$IDENTITY_ID": {}
properties:
  environmentId: $ENVIRONMENT_ID
  configuration:
    triggerType: Schedule
    replicaTimeout: 14400
    replicaRetryLimit: 0
    scheduleTriggerConfig:
      cronExpression: "$schedule"
      parallelism: 1
      replicaCompletionCount: 1
  template:
    containers:
      - name: coldvault
        image: $IMAGE
        env:
          - name: AZURE_CLIENT_ID
            value: "$IDENTITY_CLIENT_ID"
        args:
          - backup
          - --all-subscriptions
          - --shard
          - "$i/$shards"
          - --recipient
          - "$RECIPIENT"
          - --output
          - /backups
          - --json
        volumeMounts:
          - volumeName: backups
            mountPath: /backups
    volumes:
      - name: backups
        storageType: AzureFile
        storageName: coldvault-backups
EOF
  az containerapp job create --name "coldvault-backup-$i" \
    --resource-group "$RESOURCE_GROUP" --yaml "$spec"
  i=$((i + 1))
done
