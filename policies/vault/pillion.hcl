# The ACL policy pillion needs in Vault / OpenBao, and nothing more.
#
# Written for the PKI mounts `pki` (a root CA) and `pki_int` (an intermediate CA), each with a
# role `app`, and for the KV mounts `secret/` (version 2) and `kv/` (version 1) under `app/`.
# Rename the mounts, the role and the paths to yours, and drop the lines you do not use.
#
#   bao policy write pillion policies/vault/pillion.hcl
#
# The integration tests (tests/it/vault_*.rs) load this very file and give pillion's tokens no
# other policy, not even `default`: every line here is one pillion needs, and what is missing fails
# a test.

# Certificates, sign mode (the default, `pki.mode: sign`): pillion sends a CSR and the private key
# never leaves the pod. POST <mount>/sign/<role>.
path "pki/sign/app" {
  capabilities = ["update"]
}
path "pki_int/sign/app" {
  capabilities = ["update"]
}

# Certificates, issue mode (`pki.mode: issue`): Vault generates the key and returns it in the
# response. POST <mount>/issue/<role>. Remove these two if every certificate uses sign mode.
path "pki/issue/app" {
  capabilities = ["update"]
}
path "pki_int/issue/app" {
  capabilities = ["update"]
}

# Secrets in KV version 2 (`path: secret/app/db` is read at secret/data/app/db).
path "secret/data/app/*" {
  capabilities = ["read"]
}

# Secrets in KV version 1 (`path: kv/app/db` is read as is).
path "kv/app/*" {
  capabilities = ["read"]
}

# KV version detection (a secret without `kvVersion`) reads sys/internal/ui/mounts/<path>.
# OpenBao answers it for any token holding some capability under that mount (it runs a preflight
# capability check on <path>), so the two read grants above are enough and it needs no line here.

# Dynamic secrets (`path: database/creds/app`): read new credentials, renew their lease, and revoke
# it at shutdown with `revokeOnShutdown: true`. Drop these if you read only KV secrets.
path "database/creds/app" {
  capabilities = ["read"]
}
path "sys/leases/renew" {
  capabilities = ["update"]
}
path "sys/leases/revoke" {
  capabilities = ["update"]
}

# Keeping the login alive: renew the token at 2/3 of its TTL, and read its own TTL.
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
