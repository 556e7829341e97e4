// Command hubload is the hub benchmark of bench/hub.sh (see bench/HUB.md).
// One binary, three roles:
//
//	hubload bench [flags] [scenario...]  the harness: starts redis-server,
//	                                     edge and the bare server, runs the
//	                                     load against each, prints the table
//	hubload load [flags]                 the load: N subscribed WebSocket
//	                                     connections and a publisher into
//	                                     Redis; prints latency and loss
//	hubload bare [flags]                 the anchor: a minimal gorilla server
//	                                     that writes every Redis message to
//	                                     every connection, one write each
//
// Each role takes -h for its flags.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "bench":
		err = runBench(os.Args[2:])
	case "load":
		err = runLoad(os.Args[2:])
	case "bare":
		err = runBare(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "hubload %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: hubload bench|load|bare [flags]   (hubload ROLE -h for flags; see bench/HUB.md)")
	os.Exit(2)
}
