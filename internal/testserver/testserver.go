// Package testserver holds the network peers tests need and no library
// gives: for now a server that accepts and never answers.
package testserver

import (
	"net"
	"testing"
)

// Silent listens on a loopback port, accepts TCP connections and never
// says a word on them: the peer a hanging open or connect meets. It
// returns host:port; the listener and every connection close when the
// test ends.
func Silent(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}
