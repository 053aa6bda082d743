package decode

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/asticode/go-astiav"
)

// ErrUnauthorized is wrapped by the error of an Open that the server
// refused for its credentials (RTSP or HTTP 401): a wrong or missing user
// name or password, which no retry soon will fix.
var ErrUnauthorized = errors.New("unauthorized")

// ErrNotFound is wrapped by the error of an Open that the server answered
// 404: it has no stream at the URL's path, a mistake in the URL that no
// retry soon will fix.
var ErrNotFound = errors.New("not found")

// ErrTimeout is wrapped by the error of an Open whose server accepted the
// connection but did not answer in time: FFmpeg's socket timeout (the
// "timeout" or "rw_timeout" input option) ran out, or OpenContext's
// context reached its deadline (that error also wraps ErrInterrupted and
// context.DeadlineExceeded). A Next whose read hit the socket timeout
// wraps it too.
var ErrTimeout = errors.New("timed out")

// openError is an error whose message says what happened in words of its
// own while it still wraps every cause, FFmpeg's included, for errors.Is.
type openError struct {
	msg  string
	errs []error
}

func (e *openError) Error() string   { return e.msg }
func (e *openError) Unwrap() []error { return e.errs }

// classifyOpen names the failures of opening a network source that FFmpeg
// reports in its own terms: a 401 says "unauthorized", and an RTSP server
// that accepted the connection and then said nothing until the socket
// timeout says "timed out" (FFmpeg reports that as invalid data: an RTSP
// reply it never got has no valid status). took is how long the failed
// call ran, url the URL for messages (password hidden). Anything else
// comes back as wrapped.
func classifyOpen(url, step string, err error, took time.Duration, input map[string]string) error {
	if errors.Is(err, astiav.ErrHttpUnauthorized) {
		return &openError{
			msg:  "open " + url + ": " + step + "unauthorized: the server refused the credentials (401); check the user name and password in the URL",
			errs: []error{ErrUnauthorized, err},
		}
	}
	if errors.Is(err, astiav.ErrHttpNotFound) {
		return &openError{
			msg:  "open " + url + ": " + step + "not found: the server has no stream at this path (404); check the stream path in the URL",
			errs: []error{ErrNotFound, err},
		}
	}
	if errors.Is(err, astiav.ErrInvaliddata) || errors.Is(err, astiav.ErrEtimedout) {
		if t := socketTimeout(url, input); t > 0 && took >= t {
			return &openError{
				msg:  "open " + url + ": " + step + "timed out: the server accepted the connection but sent no answer within " + t.String(),
				errs: []error{ErrTimeout, err},
			}
		}
	}
	return &openError{msg: "open " + url + ": " + step + err.Error(), errs: []error{err}}
}

// socketTimeout is the I/O timeout the input options give FFmpeg's network
// protocol for url, 0 when none is set.
func socketTimeout(url string, input map[string]string) time.Duration {
	key := "rw_timeout"
	if strings.HasPrefix(url, "rtsp://") || strings.HasPrefix(url, "rtsps://") {
		key = "timeout"
	}
	us, err := strconv.ParseInt(input[key], 10, 64)
	if err != nil || us <= 0 {
		return 0
	}
	return time.Duration(us) * time.Microsecond
}
