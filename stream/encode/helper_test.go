package encode

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"testing"
	"time"

	"github.com/htcstream/htcstream/internal/mediatest"
)

// helperEnv makes the test binary act as a child process that is
// interrupted for real (see TestMain).
const helperEnv = "HTCSTREAM_STREAM_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "mp4-sigint":
		os.Exit(mp4SigintChild(os.Getenv("HELPER_PATH")))
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// mp4SigintChild records frames until SIGINT, whose handler closes the sink
// while the main loop is still writing, as the pipeline does. It prints
// "ready" after 3 frames and "frames N" (the writes that succeeded) at the
// end.
func mp4SigintChild(path string) int {
	s, err := NewFileSink(path, EncoderConfig{FrameRate: 25})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	closed := make(chan error, 1)
	go func() {
		<-sig
		closed <- s.Close()
	}()
	n := 0
	for i := 0; ; i++ {
		err := s.WriteFrame(64, 48, mediatest.Pattern(64, 48, i), time.Duration(i)*40*time.Millisecond)
		if errors.Is(err, ErrClosed) {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		n++
		if n == 3 {
			fmt.Println("ready")
		}
		if i > 5000 {
			fmt.Fprintln(os.Stderr, "no SIGINT came")
			return 1
		}
	}
	if err := <-closed; err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("frames", n)
	return 0
}

// helperCmd runs this test binary as the named helper.
func helperCmd(t *testing.T, helper, path string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+helper, "HELPER_PATH="+path)
	return cmd
}
