package record

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary act as a child process that is
// killed for real (see TestMain).
const helperEnv = "HTCSTREAM_STREAM_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "jsonl-kill":
		os.Exit(jsonlKillChild(os.Getenv("HELPER_PATH")))
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// jsonlKillChild writes 3 lines, then kills itself with SIGKILL: no Close,
// no deferred code, no runtime shutdown.
func jsonlKillChild(path string) int {
	s, err := NewJSONSink(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := 0; i < 3; i++ {
		if err := s.Write(sampleFrame(int64(i))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	time.Sleep(10 * time.Second)
	return 3
}

// helperCmd runs this test binary as the named helper.
func helperCmd(t *testing.T, helper, path string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+helper, "HELPER_PATH="+path)
	return cmd
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}
