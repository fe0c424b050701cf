// pause: the sandbox ("infra") container of the local target's kubelet, as
// registry.k8s.io/pause does it: hold the pod's namespaces, exit on SIGTERM
// or SIGINT, reap nothing else. Built static (CGO off) by tests/harness.sh.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
