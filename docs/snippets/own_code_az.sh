# The Azure CLI against the local Key Vault, from the variables `coldvault emulator --print-env`
# exports (and its /etc/hosts lines added). docs/EMULATOR.md shows this file;
# tests/python/test_own_code.py runs it.
export AZURE_CONFIG_DIR="${AZURE_CONFIG_DIR:-$(mktemp -d)}"  # a profile of its own, ~/.azure untouched
export AZURE_CORE_INSTANCE_DISCOVERY=false  # MSAL must not ask login.microsoftonline.com
# The login endpoint and the Key Vault DNS suffix come from the emulator's cloud metadata.
az cloud register --name coldvault-local --endpoint-resource-manager "$COLDVAULT_EMULATOR_ARM_ENDPOINT"
az cloud set --name coldvault-local
# `@FILE` keeps the client secret out of the command line.
(umask 077 && printf '%s' "$AZURE_CLIENT_SECRET" > "$AZURE_CONFIG_DIR/client-secret")
az login --service-principal --tenant "$AZURE_TENANT_ID" \
    --username "$AZURE_CLIENT_ID" --password "@$AZURE_CONFIG_DIR/client-secret" --output none
az keyvault list --query "[].name" --output tsv
az keyvault secret show --vault-name prod --name db-password --query value --output tsv
