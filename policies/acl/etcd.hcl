# {{cluster}}-etcd: an etcd member. Its own server+peer certificate (the name is
# pinned to the token's node_name by the role) and the health-check client.
# Exact paths only: a `+` in place of issue/sign would also match roles/ and
# sign-verbatim/.

path "{{cluster}}/pki/etcd-member/issue/member" { capabilities = ["update"] }
path "{{cluster}}/pki/etcd-member/sign/member" { capabilities = ["update"] }
path "{{cluster}}/pki/etcd-member/issue/healthcheck-client" { capabilities = ["update"] }
path "{{cluster}}/pki/etcd-member/sign/healthcheck-client" { capabilities = ["update"] }
