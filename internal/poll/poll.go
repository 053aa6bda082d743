// Package poll is how tests wait for something another goroutine or
// process does: they check for it every few milliseconds until a deadline,
// instead of sleeping for a time that is either too long or, on a busy
// machine, too short.
package poll

import (
	"testing"
	"time"
)

// Every is how often Until checks.
const Every = 10 * time.Millisecond

// Until checks cond until it holds, or fails the test after d, naming what
// it waited for.
func Until(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(Every)
	}
}
