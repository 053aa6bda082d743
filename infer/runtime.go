package infer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/htcstream/htcstream/internal/install"
	ort "github.com/yalue/onnxruntime_go"
)

// LibraryEnv is the environment variable that names the ONNX Runtime shared
// library when no flag does.
const LibraryEnv = "HTCSTREAM_ORT_LIB"

// ProjectLibrary is where scripts/setup unpacks the ONNX Runtime library,
// relative to the project root.
const ProjectLibrary = "third_party/onnxruntime/lib/libonnxruntime.so.1"

// ErrLibraryNotFound is returned (wrapped) by FindLibrary when no candidate
// location holds the library.
var ErrLibraryNotFound = errors.New("onnxruntime library not found")

// FindLibrary returns the path of the ONNX Runtime shared library: the flag
// value when set, else $HTCSTREAM_ORT_LIB when set, else the project's own
// install location (found next to the executable or above the working
// directory), else the data folder `htcstream setup` installs it into
// (install.LibraryPath). A flag or variable that names a missing file is an error of its
// own rather than a reason to look further, so a typo is never hidden by a
// fallback.
func FindLibrary(flagPath string) (string, error) {
	if flagPath != "" {
		return existing(flagPath, "--ort-lib")
	}
	if p := os.Getenv(LibraryEnv); p != "" {
		return existing(p, LibraryEnv)
	}
	candidates := projectLibraryCandidates()
	if p, err := install.LibraryPath(); err == nil {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		if install.Exists(c) {
			return c, nil
		}
	}
	return "", fmt.Errorf("%w: --ort-lib not given, %s not set, none of %s; run 'htcstream setup' (or scripts/setup in a checkout)",
		ErrLibraryNotFound, LibraryEnv, strings.Join(slices.Compact(candidates), ", "))
}

func existing(path, source string) (string, error) {
	if !install.Exists(path) {
		return "", fmt.Errorf("%w: %s names %s, which does not exist", ErrLibraryNotFound, source, path)
	}
	return path, nil
}

// projectLibraryCandidates lists the project install location relative to the
// executable (bin/htcstream) and to every directory above the working
// directory up to the module root, so tests running in a package directory
// find it too.
func projectLibraryCandidates() []string {
	var out []string
	if exe, err := os.Executable(); err == nil {
		out = append(out, filepath.Join(filepath.Dir(filepath.Dir(exe)), ProjectLibrary))
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			if install.Exists(filepath.Join(dir, "go.mod")) {
				out = append(out, filepath.Join(dir, ProjectLibrary))
				break
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	return out
}

var (
	runtimeMu   sync.Mutex
	runtimePath string
)

// InitRuntime loads the ONNX Runtime library at path and creates the process-wide
// environment. ONNX Runtime allows one environment per process, so later calls
// with the same path are no-ops and a call with another path is an error.
func InitRuntime(path string) error {
	runtimeMu.Lock()
	defer runtimeMu.Unlock()
	if runtimePath != "" {
		if runtimePath != path {
			return fmt.Errorf("onnxruntime already loaded from %s, cannot load %s too", runtimePath, path)
		}
		return nil
	}
	ort.SetSharedLibraryPath(path)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("load onnxruntime from %s: %w", path, err)
	}
	runtimePath = path
	return nil
}

// RuntimeVersion reports the version of the loaded ONNX Runtime library.
// It must follow a successful InitRuntime.
func RuntimeVersion() string {
	runtimeMu.Lock()
	defer runtimeMu.Unlock()
	if runtimePath == "" {
		return ""
	}
	return ort.GetVersion()
}
