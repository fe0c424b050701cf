# {{cluster}}-operator: a human operator. A short-lived admin kubeconfig,
# token lookup and revocation by accessor, and certificate revocation. It can
# never obtain a node, controller or etcd identity: it creates no tokens at
# all (nodes log in with their instance identity or a JWT; enrolling by token
# takes the root token), has no sudo anywhere, and cannot change mounts,
# roles, CAs or policies: that is `apply-profile` with a root token.

path "{{cluster}}/pki/kube-apiserver/issue/admin" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/sign/admin" { capabilities = ["update"] }

path "auth/token/lookup-accessor" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }

# Inspect and revoke certificates on every mount of the cluster.
path "{{cluster}}/pki/+/certs" { capabilities = ["list"] }
path "{{cluster}}/pki/+/certs/revoked" { capabilities = ["list"] }
path "{{cluster}}/pki/+/revoke" { capabilities = ["update"] }
path "{{cluster}}/pki/+/roles" { capabilities = ["list"] }
path "{{cluster}}/pki/+/roles/*" { capabilities = ["read"] }
