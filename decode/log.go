package decode

import (
	"log/slog"
	"strings"

	"github.com/asticode/go-astiav"

	"github.com/htcstream/htcstream/internal/redact"
)

// FFmpeg prints its warnings to stderr by default, one per damaged packet;
// route what matters through slog instead so every line carries the
// program's structure and level.
func init() {
	astiav.SetLogLevel(astiav.LogLevelError)
	astiav.SetLogCallback(func(l astiav.LogLevel, format, msg, parent string) {
		msg = strings.TrimSpace(msg)
		if msg == "" {
			return
		}
		slog.Debug("ffmpeg", "level", int(l), "msg", redact.Text(msg), "component", parent)
	})
}
