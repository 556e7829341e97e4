// Command edge serves static files, proxies and WebSockets, and runs a
// realtime broadcast hub, with automatic HTTPS: one binary in front of a
// realtime web app. See README.md.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := cli(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if err != errSilent {
			fmt.Fprintln(os.Stderr, "edge:", err)
		}
		os.Exit(1)
	}
}
