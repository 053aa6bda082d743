package pipeline

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// StartProgress prints a progress line (with an ETA when total is known)
// on w while a terminal watches, and returns a function that ends it. On a
// pipe or a file it prints nothing: a log is no place for carriage returns.
func StartProgress(w io.Writer, frames *atomic.Int64, total int64) func() {
	f, ok := w.(*os.File)
	if !ok || !IsTerminal(f) {
		return func() {}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(stopped)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
				n := frames.Load()
				el := time.Since(start)
				fps := float64(n) / el.Seconds()
				if total > 0 && n > 0 {
					eta := time.Duration(float64(total-n) / fps * float64(time.Second)).Round(time.Second)
					fmt.Fprintf(w, "\r\033[K%s %d/%d frames, %.1f fps, %s elapsed, ETA %s", Bar(n, total), n, total, fps, el.Round(time.Second), max(eta, 0))
				} else {
					fmt.Fprintf(w, "\r\033[K%d frames, %.1f fps, %s elapsed", n, fps, el.Round(time.Second))
				}
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// Bar draws a 20-character progress bar.
func Bar(n, total int64) string {
	full := int(min(n, total) * 20 / total)
	return "[" + strings.Repeat("#", full) + strings.Repeat(".", 20-full) + "]"
}

// IsTerminal says whether f is a terminal (a character device).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
