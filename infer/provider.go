package infer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/htcstream/htcstream/internal/install"
	ort "github.com/yalue/onnxruntime_go"
)

// ErrProvider is returned (wrapped) when the loaded ONNX Runtime library
// cannot give the execution provider asked for. Nothing falls back to CPU:
// a run asked to use a GPU that quietly used the CPU would be a wrong run.
var ErrProvider = errors.New("execution provider unavailable")

// ParseProvider reads an execution provider's name: cpu, cuda[:N] or
// tensorrt[:N], N being the GPU's index (default 0). It returns the kind
// (CPU, CUDA or TensorRT) and the index; empty is cpu.
func ParseProvider(s string) (Provider, int, error) {
	name, dev, hasDev := strings.Cut(strings.TrimSpace(s), ":")
	kind := Provider(strings.ToLower(name))
	switch kind {
	case "", CPU:
		if hasDev {
			return "", 0, fmt.Errorf("execution provider %q: cpu takes no device index", s)
		}
		return CPU, 0, nil
	case CUDA, TensorRT:
	default:
		return "", 0, fmt.Errorf("unknown execution provider %q (want cpu, cuda[:N] or tensorrt[:N])", s)
	}
	if !hasDev {
		return kind, 0, nil
	}
	n, err := strconv.Atoi(dev)
	if err != nil || n < 0 {
		return "", 0, fmt.Errorf("execution provider %q: the device index after ':' must be a GPU number 0, 1, ...", s)
	}
	return kind, n, nil
}

// canonical spells a provider as sessions report it: cpu, cuda:N, tensorrt:N.
func canonical(kind Provider, dev int) Provider {
	if kind == CPU {
		return CPU
	}
	return Provider(fmt.Sprintf("%s:%d", kind, dev))
}

// CheckProvider reports whether the loaded ONNX Runtime library gives
// provider p, without opening a graph: the error (wrapping ErrProvider) is
// one line saying what was asked, why the library cannot give it and where
// a library that can comes from. InitRuntime must have succeeded.
func CheckProvider(p Provider) error {
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return err
	}
	defer opts.Destroy()
	_, err = appendProvider(opts, p)
	return err
}

// providerLibraries are the files ONNX Runtime loads (dlopen, by bare name)
// when a session asks for a GPU provider; its CPU build ships none of them.
var providerLibraries = map[Provider][]string{
	CUDA:     {"libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so"},
	TensorRT: {"libonnxruntime_providers_tensorrt.so", "libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so"},
}

// missingProviderLibrary names the first file of kind's providerLibraries
// found neither beside the loaded library (its RUNPATH is $ORIGIN) nor in
// $LD_LIBRARY_PATH, or "" when all are there. A file only in the system's
// linker cache escapes this look, so it is a hint, not the verdict:
// appendProvider still asks ONNX Runtime.
func missingProviderLibrary(kind Provider, lib string) string {
	var dirs []string
	if lib != "" {
		dirs = append(dirs, filepath.Dir(lib))
		if real, err := filepath.EvalSymlinks(lib); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	dirs = append(dirs, filepath.SplitList(os.Getenv("LD_LIBRARY_PATH"))...)
	for _, name := range providerLibraries[kind] {
		found := false
		for _, d := range dirs {
			if d != "" && install.Exists(filepath.Join(d, name)) {
				found = true
				break
			}
		}
		if !found {
			return name
		}
	}
	return ""
}

// logMu serialises the moments appendProvider turns ONNX Runtime's log down.
var logMu sync.Mutex

// appendProvider asks opts for provider p and returns the provider the
// session will use, spelt canonically (cpu, cuda:N, tensorrt:N). TensorRT
// comes with CUDA behind it on the same GPU, for the nodes TensorRT does not
// take. When the library cannot give p the error wraps ErrProvider.
func appendProvider(opts *ort.SessionOptions, p Provider) (Provider, error) {
	kind, dev, err := ParseProvider(string(p))
	if err != nil {
		return "", err
	}
	if kind == CPU {
		return CPU, nil
	}
	runtimeMu.Lock()
	lib := runtimePath
	runtimeMu.Unlock()
	missing := missingProviderLibrary(kind, lib)
	if missing != "" {
		// The usual case of the CPU build: ONNX Runtime would log its failed
		// dlopen in colour over several lines before returning; the error
		// below says it in one.
		logMu.Lock()
		defer logMu.Unlock()
		ort.SetEnvironmentLogLevel(ort.LoggingLevelFatal)
		defer ort.SetEnvironmentLogLevel(ort.LoggingLevelError)
	}
	if err := appendGPU(opts, kind, dev); err != nil {
		want := canonical(kind, dev)
		if missing != "" {
			return "", fmt.Errorf("%w: %s asked for, but the ONNX Runtime library %s (%s) has no %s provider (%s is not beside it); "+
				"point --ort-lib or $%s at lib/libonnxruntime.so.1 of ONNX Runtime %s's GPU build (onnxruntime-linux-x64-gpu-%s.tgz; it needs %s), or use --provider cpu",
				ErrProvider, want, lib, ort.GetVersion(), displayName(kind), missing, LibraryEnv, ort.GetVersion(), ort.GetVersion(), needs(kind))
		}
		return "", fmt.Errorf("%w: %s asked for, but ONNX Runtime %s (%s) could not start its %s provider: %s; it needs %s and an NVIDIA GPU with its driver (docs/benchmarks.md, \"GPU (issue 14)\")",
			ErrProvider, want, ort.GetVersion(), lib, displayName(kind), oneLine(err), needs(kind))
	}
	return canonical(kind, dev), nil
}

// appendGPU appends kind's provider(s) on GPU dev.
func appendGPU(opts *ort.SessionOptions, kind Provider, dev int) error {
	id := map[string]string{"device_id": strconv.Itoa(dev)}
	if kind == TensorRT {
		t, err := ort.NewTensorRTProviderOptions()
		if err != nil {
			return err
		}
		defer t.Destroy()
		if err := t.Update(id); err != nil {
			return err
		}
		if err := opts.AppendExecutionProviderTensorRT(t); err != nil {
			return err
		}
	}
	c, err := ort.NewCUDAProviderOptions()
	if err != nil {
		return err
	}
	defer c.Destroy()
	if err := c.Update(id); err != nil {
		return err
	}
	return opts.AppendExecutionProviderCUDA(c)
}

func displayName(kind Provider) string {
	if kind == TensorRT {
		return "TensorRT"
	}
	return "CUDA"
}

// needs is what ONNX Runtime's GPU build runs on. CUDA 12.x with cuDNN 9.x
// is what the GPU tgz of every release since 1.19 is built with
// (onnxruntime.ai, CUDA execution provider, Requirements); the TensorRT
// version moves with each release and could not be checked for the pinned
// one here (no GPU, no network), so the line names where to look rather
// than a number that may be wrong.
func needs(kind Provider) string {
	if kind == TensorRT {
		return "CUDA 12, cuDNN 9 and the TensorRT that onnxruntime.ai's TensorRT execution provider page lists for ONNX Runtime " + ort.GetVersion()
	}
	return "CUDA 12 and cuDNN 9"
}

// oneLine keeps an ONNX Runtime message on one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
