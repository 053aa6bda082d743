package infer

import (
	"errors"
	"fmt"
	"strings"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/htcstream/htcstream/internal/cores"
	"github.com/htcstream/htcstream/internal/install"
)

// Provider names an ONNX Runtime execution provider.
type Provider string

const (
	CPU      Provider = "cpu"
	CUDA     Provider = "cuda"
	TensorRT Provider = "tensorrt"
)

// SessionOptions configures one ONNX Runtime session. The zero value is valid:
// CPU, one intra-op thread per usable core.
type SessionOptions struct {
	// Provider is the execution provider asked for: cpu (the default),
	// cuda[:N] or tensorrt[:N] (ParseProvider). When the loaded library
	// cannot give it, opening fails (ErrProvider); nothing falls back.
	Provider Provider
	// IOBinding: run through an ONNX Runtime IoBinding; BindAuto (the zero
	// value) binds on cuda and tensorrt only. See binding.go for what
	// onnxruntime_go lets a binding do.
	IOBinding IOBinding
	// IntraOpThreads bounds the threads one graph run uses; 0 means the
	// cores this process may use (its affinity mask and cgroup CPU quota,
	// internal/cores). ONNX Runtime is never left to choose: its own
	// choice pins one thread per core of the machine, and on a shared
	// 2-core box it ran the graphs up to twice as slow (docs/benchmarks.md,
	// "Threads").
	IntraOpThreads int
	// SpinWait lets idle intra-op threads spin while waiting for work
	// (ONNX Runtime's own default). Off by default: on a CPU shared with
	// decoding, encoding and other processes, spinning threads take the
	// cores the others need, and a graph run waits for its slowest thread
	// (docs/benchmarks.md, "Graph layout and session settings").
	SpinWait bool
	// MemPattern turns on ONNX Runtime's per-shape memory planning. Off by
	// default: with a new RoI count every frame it only adds memory.
	MemPattern bool
}

// Session runs one ONNX graph. Its input and output names come from the graph
// itself, in the graph's order. A Session is not safe for concurrent Run calls
// from several goroutines; the pipeline's inference goroutine owns one per graph.
type Session struct {
	path    string
	sess    *ort.DynamicAdvancedSession
	Inputs  []ort.InputOutputInfo
	Outputs []ort.InputOutputInfo
	// Provider is the execution provider the session runs on: cpu, cuda:N
	// or tensorrt:N.
	Provider Provider
	bind     *binding // nil: plain runs
	// boundRuns counts the runs made through bind (tests read it).
	boundRuns int
}

// OpenSession loads the graph at path. InitRuntime must have succeeded.
func OpenSession(path string, o SessionOptions) (*Session, error) {
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options for %s: %w", path, err)
	}
	defer opts.Destroy()
	if err := configure(opts, o); err != nil {
		return nil, fmt.Errorf("session options for %s: %w", path, err)
	}
	provider, err := appendProvider(opts, o.Provider)
	if err != nil {
		return nil, err
	}
	ins, outs, err := ort.GetInputOutputInfoWithOptions(path, opts)
	if err != nil {
		return nil, fmt.Errorf("read graph %s: %w", path, missingKernel(err))
	}
	sess, err := ort.NewDynamicAdvancedSession(path, names(ins), names(outs), opts)
	if err != nil {
		return nil, fmt.Errorf("open graph %s: %w", path, missingKernel(err))
	}
	s := &Session{path: path, sess: sess, Inputs: ins, Outputs: outs, Provider: provider}
	if o.IOBinding == BindOn || (o.IOBinding == BindAuto && provider != CPU) {
		if s.bind, err = newBinding(sess); err != nil {
			sess.Destroy()
			return nil, fmt.Errorf("io binding for %s: %w", path, err)
		}
	}
	return s, nil
}

// configure applies o's CPU settings: every graph optimisation (ONNX
// Runtime's highest level, also its default, stated so a library built with
// another default does not change the graphs), nodes run one at a time with
// the intra-op pool parallelising inside each (the graphs are chains; an
// inter-op pool would only add threads competing for the same cores), and
// no spin-waiting unless asked for.
func configure(opts *ort.SessionOptions, o SessionOptions) error {
	if err := opts.SetGraphOptimizationLevel(ort.GraphOptimizationLevelEnableAll); err != nil {
		return err
	}
	if err := opts.SetExecutionMode(ort.ExecutionModeSequential); err != nil {
		return err
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		return err
	}
	if err := opts.SetIntraOpNumThreads(IntraOpThreads(o.IntraOpThreads)); err != nil {
		return err
	}
	// ONNX Runtime plans a memory pattern per input shape; the head graphs
	// see a new RoI count nearly every frame, so the plans pile up.
	// Measured (docs/benchmarks.md): peak RSS of the R-50 at 1333x800
	// 3.80 -> 2.46 GB, of the default model 428 -> 330 MB, same speed.
	if err := opts.SetMemPattern(o.MemPattern); err != nil {
		return err
	}
	spin := "0"
	if o.SpinWait {
		spin = "1"
	}
	return opts.AddSessionConfigEntry("session.intra_op.allow_spinning", spin)
}

// IntraOpThreads is the intra-op thread count a session asks ONNX Runtime
// for: n, or when n is 0 the cores this process may use.
func IntraOpThreads(n int) int {
	if n > 0 {
		return n
	}
	return cores.Usable()
}

func names(infos []ort.InputOutputInfo) []string {
	out := make([]string, len(infos))
	for i, in := range infos {
		out[i] = in.Name
	}
	return out
}

// Run runs the graph on inputs given in the graph's input order and returns
// its outputs in the graph's output order. The caller owns the returned
// values and must Destroy each exactly once; inputs stay the caller's.
func (s *Session) Run(inputs ...ort.Value) ([]ort.Value, error) {
	if len(inputs) != len(s.Inputs) {
		return nil, fmt.Errorf("graph %s takes %d inputs, got %d", s.path, len(s.Inputs), len(inputs))
	}
	if s.bind != nil {
		return s.runBound(inputs)
	}
	return s.runPlain(inputs)
}

// runPlain runs the graph with ONNX Runtime allocating the outputs.
func (s *Session) runPlain(inputs []ort.Value) ([]ort.Value, error) {
	outputs := make([]ort.Value, len(s.Outputs))
	if err := s.sess.Run(inputs, outputs); err != nil {
		for _, v := range outputs {
			if v != nil {
				v.Destroy()
			}
		}
		return nil, fmt.Errorf("run graph %s: %w", s.path, err)
	}
	return outputs, nil
}

// Close releases the session. It is idempotent.
func (s *Session) Close() error {
	if s.sess == nil {
		return nil
	}
	if s.bind != nil {
		s.bind.destroy()
		s.bind = nil
	}
	err := s.sess.Destroy()
	s.sess = nil
	if err != nil {
		return fmt.Errorf("close graph %s: %w", s.path, err)
	}
	return nil
}

// Float32Output returns the data and shape of a float32 tensor output.
// The data aliases the value's memory: it is valid until the value is
// destroyed.
func Float32Output(v ort.Value) ([]float32, []int64, error) {
	t, ok := v.(*ort.Tensor[float32])
	if !ok {
		return nil, nil, errors.New("output is not a float32 tensor")
	}
	return t.GetData(), t.GetShape(), nil
}

// ErrMissingKernel is returned (wrapped) when the loaded ONNX Runtime has no
// kernel for an operator a graph uses: the graph needs a newer runtime.
var ErrMissingKernel = errors.New("operator not in this ONNX Runtime")

// kernelNeeds names the ONNX Runtime releases known to run an operator that
// older ones lack. DeformConv (ONNX opset 19, the DCN models' deformable
// convolution) has no kernel in 1.22; 1.30.0 and 1.31.1 run it and match
// torchvision's deform_conv2d (TestDeformConvMatchesTorchvision).
var kernelNeeds = map[string]string{
	"DeformConv": "ONNX Runtime 1.30 or newer (scripts/setup installs " + install.Pinned().Version + ")",
}

// missingKernel turns ONNX Runtime's "Could not find an implementation for
// OP(V) node" into one line naming the operator, the loaded runtime and the
// runtime the operator needs; other errors pass through.
func missingKernel(err error) error {
	msg := err.Error()
	const marker = "Could not find an implementation for "
	i := strings.Index(msg, marker)
	if i < 0 {
		return err
	}
	op := msg[i+len(marker):]
	if j := strings.IndexAny(op, "( "); j >= 0 {
		op = op[:j]
	}
	needs := kernelNeeds[op]
	if needs == "" {
		needs = "a newer ONNX Runtime"
	}
	return fmt.Errorf("%w: the graph uses %s, which ONNX Runtime %s has no kernel for; it needs %s (--ort-lib or $%s)",
		ErrMissingKernel, op, RuntimeVersion(), needs, LibraryEnv)
}
