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
					fmt.Fprintf(w, "\r\033[K%s %d/%d frames, %s, %s elapsed, ETA %s", Bar(n, total), n, total, Rate(fps), el.Round(time.Second), max(eta, 0))
				} else {
					fmt.Fprintf(w, "\r\033[K%d frames, %s, %s elapsed", n, Rate(fps), el.Round(time.Second))
				}
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// Rate writes a frame rate so that a slow model still reads as a number:
// a real-size HTC on a CPU runs well under 0.1 fps, which "%.1f fps" shows
// as 0.0.
func Rate(fps float64) string {
	switch {
	case fps <= 0:
		return "0 fps"
	case fps < 1:
		return fmt.Sprintf("%.2g fps (%.1f s/frame)", fps, 1/fps)
	default:
		return fmt.Sprintf("%.1f fps", fps)
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
