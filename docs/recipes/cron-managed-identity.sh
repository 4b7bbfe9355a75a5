#!/bin/sh
# /etc/cron.d entry on an Azure VM whose managed identity holds the backup permissions:
#   17 2 * * * backup /usr/local/bin/coldvault-backup.sh
# Exit codes: 0 complete, 3 partial (items named in the log), anything else failed.
set -eu
coldvault backup --vault prod-kv --auth managed-identity \
  --recipients-file /etc/coldvault/recipients.txt \
  --output /var/backups/coldvault --json >> /var/log/coldvault/backup.jsonl
