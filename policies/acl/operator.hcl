# {{cluster}}-operator: a human operator. A short-lived admin kubeconfig,
# node enrolment (tokens from the node token roles, with meta node_name, which
# needs sudo on auth/token/create), and revocation. It cannot change mounts,
# roles, CAs or policies: that is `apply-profile` with a root token.

path "{{cluster}}/pki/kube-apiserver/issue/admin" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/sign/admin" { capabilities = ["update"] }

# Enrol nodes. sudo here only marks the caller as privileged (token metadata);
# without update, auth/token/create itself stays closed.
path "auth/token/create" { capabilities = ["sudo"] }
path "auth/token/create/{{cluster}}-etcd" { capabilities = ["update"] }
path "auth/token/create/{{cluster}}-controller" { capabilities = ["update"] }
path "auth/token/create/{{cluster}}-worker" { capabilities = ["update"] }
path "auth/token/lookup-accessor" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }

# Inspect and revoke certificates on every mount of the cluster.
path "{{cluster}}/pki/+/certs" { capabilities = ["list"] }
path "{{cluster}}/pki/+/certs/revoked" { capabilities = ["list"] }
path "{{cluster}}/pki/+/revoke" { capabilities = ["update"] }
path "{{cluster}}/pki/+/roles" { capabilities = ["list"] }
path "{{cluster}}/pki/+/roles/*" { capabilities = ["read"] }
