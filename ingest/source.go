package ingest

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"strings"

	"github.com/htcstream/htcstream/internal/redact"
)

// Kind is the kind of a source.
type Kind string

const (
	File   Kind = "file"
	RTSP   Kind = "rtsp"
	Camera Kind = "camera" // a V4L2 device
	HTTP   Kind = "http"   // a live stream over http(s): HLS, MJPEG, MPEG-TS
	Images Kind = "images" // a folder of still images
)

// Live reports whether frames of this kind arrive in real time (and so must
// never block the source: the newest frame wins).
func (k Kind) Live() bool { return k == RTSP || k == Camera || k == HTTP }

// ErrBadURL is wrapped by every error Parse returns.
var ErrBadURL = errors.New("bad source")

// Source is a parsed source URL.
type Source struct {
	Kind Kind
	// Location is what FFmpeg opens: a path, a device or a URL with its
	// credentials kept.
	Location string
	// Format forces an FFmpeg input format (v4l2 for cameras).
	Format string
	// Options are FFmpeg demuxer/protocol options.
	Options map[string]string
}

// Parse reads a source URL: a path or file:// URL, rtsp:// or rtsps://,
// /dev/videoN or v4l2:///dev/videoN, http(s)://, or a directory of images.
// Local paths must exist; the error says which and why. An http(s) URL
// whose path names a recorded file (.mp4, .mkv, ...; recordedExt) is a File:
// read once, every frame, ending at its end; any other is a live HTTP
// stream.
func Parse(raw string) (Source, error) {
	if strings.TrimSpace(raw) == "" {
		return Source{}, fmt.Errorf("%w: empty source", ErrBadURL)
	}
	if !strings.Contains(raw, "://") {
		return local(raw, raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Source{}, fmt.Errorf("%w: %q: %v", ErrBadURL, redact.URL(raw), err)
	}
	switch u.Scheme {
	case "file":
		return local(raw, u.Path)
	case "rtsp", "rtsps":
		if u.Host == "" {
			return Source{}, fmt.Errorf("%w: %s has no host", ErrBadURL, redact.URL(raw))
		}
		return Source{Kind: RTSP, Location: raw, Options: map[string]string{"rtsp_transport": DefaultTransport}}, nil
	case "http", "https":
		if u.Host == "" {
			return Source{}, fmt.Errorf("%w: %s has no host", ErrBadURL, redact.URL(raw))
		}
		if recordedExt[strings.ToLower(path.Ext(u.Path))] {
			return Source{Kind: File, Location: raw}, nil
		}
		return Source{Kind: HTTP, Location: raw}, nil
	case "v4l2":
		return camera(u.Path)
	default:
		return Source{}, fmt.Errorf("%w: unknown scheme %q in %s (want a path, file, rtsp, rtsps, http, https or v4l2)", ErrBadURL, u.Scheme, redact.URL(raw))
	}
}

// recordedExt are the extensions of recorded video files: served over HTTP,
// such a file is read like a local one rather than as a live stream, which
// would drop frames to stay current and reconnect at the end, forever.
var recordedExt = map[string]bool{".mp4": true, ".m4v": true, ".mov": true, ".mkv": true, ".webm": true, ".avi": true}

func local(raw, path string) (Source, error) {
	if strings.HasPrefix(path, "/dev/video") {
		return camera(path)
	}
	st, err := os.Stat(path)
	if err != nil {
		return Source{}, fmt.Errorf("%w: %s: %v", ErrBadURL, raw, errors.Unwrap(err))
	}
	if st.IsDir() {
		return Source{Kind: Images, Location: path}, nil
	}
	return Source{Kind: File, Location: path}, nil
}

func camera(dev string) (Source, error) {
	if _, err := os.Stat(dev); err != nil {
		return Source{}, fmt.Errorf("%w: camera %s does not exist", ErrBadURL, dev)
	}
	return Source{Kind: Camera, Location: dev, Format: "v4l2"}, nil
}

// String names the source for messages and logs, any password hidden, so
// printing a Source (%v, %+v) never leaks its credentials.
func (s Source) String() string {
	if s.Format != "" {
		return fmt.Sprintf("%s %s (%s)", s.Kind, redact.URL(s.Location), s.Format)
	}
	return fmt.Sprintf("%s %s", s.Kind, redact.URL(s.Location))
}

// redact hides a password in a URL for messages and logs.
