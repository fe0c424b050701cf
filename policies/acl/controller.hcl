# {{cluster}}-controller: a control-plane node (apiserver, controller-manager,
# scheduler, and its own kubelet and kube-proxy). Not the etcd member
# certificate, not the operator's admin certificate.

# etcd CA: the apiserver's etcd client and health checks.
path "{{cluster}}/pki/etcd-member/issue/apiserver-client" { capabilities = ["update"] }
path "{{cluster}}/pki/etcd-member/sign/apiserver-client" { capabilities = ["update"] }
path "{{cluster}}/pki/etcd-member/issue/healthcheck-client" { capabilities = ["update"] }
path "{{cluster}}/pki/etcd-member/sign/healthcheck-client" { capabilities = ["update"] }

# kubernetes CA.
path "{{cluster}}/pki/kube-apiserver/issue/apiserver" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/sign/apiserver" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/issue/apiserver-kubelet-client" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/sign/apiserver-kubelet-client" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/issue/controller-manager" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/sign/controller-manager" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/issue/scheduler" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/sign/scheduler" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/issue/kubelet-client" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/sign/kubelet-client" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/issue/kubelet-serving" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/sign/kubelet-serving" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/issue/kube-proxy" { capabilities = ["update"] }
path "{{cluster}}/pki/kube-apiserver/sign/kube-proxy" { capabilities = ["update"] }

# front-proxy CA.
path "{{cluster}}/pki/front-proxy/issue/front-proxy-client" { capabilities = ["update"] }
path "{{cluster}}/pki/front-proxy/sign/front-proxy-client" { capabilities = ["update"] }

# Service-account signing key: issue its own; list the mount's certificates to
# build the verification bundle (cert/<serial> itself is unauthenticated).
path "{{cluster}}/pki/service-account/issue/signer" { capabilities = ["update"] }
path "{{cluster}}/pki/service-account/sign/signer" { capabilities = ["update"] }
path "{{cluster}}/pki/service-account/certs" { capabilities = ["list"] }
path "{{cluster}}/pki/service-account/certs/revoked" { capabilities = ["list"] }
