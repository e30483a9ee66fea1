// The pod sandbox ("pause") image's only program: hold the pod's namespaces open until told to stop.
// Kubernetes normally pulls registry.k8s.io/pause; no registry is reachable here, so we build our own.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sig {
		if s == syscall.SIGCHLD {
			// As PID 1 of a shared PID namespace we reap orphans.
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
