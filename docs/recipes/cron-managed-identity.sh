#!/bin/sh
# /etc/cron.d entry on an Azure VM whose managed identity holds the backup permissions:
#   17 2 * * * backup /usr/local/bin/coldvault-backup.sh
# coldvault is installed once on the VM from a checkout of its repository:
#   cargo install --locked --path . --root /usr/local
# Exit codes: 0 complete, 3 partial (items named in the log), anything else failed.
# The settings below can be overridden from the cron entry's environment.
set -eu
vault=${VAULT:-prod-kv}
recipients=${RECIPIENTS_FILE:-/etc/coldvault/recipients.txt}
output=${BACKUP_DIR:-/var/backups/coldvault}
log=${LOG_FILE:-/var/log/coldvault/backup.jsonl}
coldvault backup --vault "$vault" --auth managed-identity \
  --recipients-file "$recipients" \
  --output "$output" --json >> "$log"
