package infer

import (
	"errors"
	"fmt"

	ort "github.com/yalue/onnxruntime_go"
)

// SessionOptions configures one ONNX Runtime session. The zero value is valid:
// CPU, ONNX Runtime's own thread choice.
type SessionOptions struct {
	// IntraOpThreads bounds the threads one graph run uses; 0 lets ONNX
	// Runtime choose (one per core).
	IntraOpThreads int
}

// Session runs one ONNX graph. Its input and output names come from the graph
// itself, in the graph's order. A Session is not safe for concurrent Run calls
// from several goroutines; the batcher owns one per graph.
type Session struct {
	path    string
	sess    *ort.DynamicAdvancedSession
	Inputs  []ort.InputOutputInfo
	Outputs []ort.InputOutputInfo
}

// OpenSession loads the graph at path. InitRuntime must have succeeded.
func OpenSession(path string, o SessionOptions) (*Session, error) {
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options for %s: %w", path, err)
	}
	defer opts.Destroy()
	if o.IntraOpThreads > 0 {
		if err := opts.SetIntraOpNumThreads(o.IntraOpThreads); err != nil {
			return nil, fmt.Errorf("session options for %s: %w", path, err)
		}
	}
	ins, outs, err := ort.GetInputOutputInfoWithOptions(path, opts)
	if err != nil {
		return nil, fmt.Errorf("read graph %s: %w", path, err)
	}
	sess, err := ort.NewDynamicAdvancedSession(path, names(ins), names(outs), opts)
	if err != nil {
		return nil, fmt.Errorf("open graph %s: %w", path, err)
	}
	return &Session{path: path, sess: sess, Inputs: ins, Outputs: outs}, nil
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
