package decode

import (
	"log/slog"
	"regexp"
	"strings"

	"github.com/asticode/go-astiav"
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
		slog.Debug("ffmpeg", "level", int(l), "msg", redactLog(msg), "component", parent)
	})
}

// userinfo matches the credentials part of a URL inside free text.
var userinfo = regexp.MustCompile(`://[^/\s@]*@`)

// redactLog hides URL credentials in FFmpeg's messages: some protocols print
// the URL they open, password and query included.
func redactLog(msg string) string {
	return redactQuery(userinfo.ReplaceAllString(msg, "://xxxxx@"))
}
