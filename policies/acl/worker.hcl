# {{cluster}}-worker: a worker node. Its own kubelet client and serving
# certificates (CN system:node:<node_name>, pinned by the roles to the token's
# node_name) and kube-proxy. Nothing from the etcd or front-proxy CAs, no
# apiserver, controller or admin identity, no service-account key.

path "{{cluster}}/pki/kube-apiserver/issue/kubelet-client" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/sign/kubelet-client" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/issue/kubelet-serving" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/sign/kubelet-serving" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/issue/kube-proxy" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/sign/kube-proxy" { capabilities = ["update"] }
