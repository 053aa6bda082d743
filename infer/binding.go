package infer

import (
	"fmt"
	"strings"

	ort "github.com/yalue/onnxruntime_go"
)

// IOBinding chooses whether a session runs through an ONNX Runtime
// IoBinding (SessionOptions.IOBinding).
type IOBinding int

const (
	// BindAuto binds on the cuda and tensorrt providers, not on cpu.
	BindAuto IOBinding = iota
	// BindOn binds on every provider (the tests use it on cpu).
	BindOn
	// BindOff never binds.
	BindOff
)

// binding runs one session through one ort.IoBinding.
//
// What onnxruntime_go v1.21.0 can bind are its own tensors, and those live in
// host memory: it has one CPU OrtMemoryInfo, no way to make a tensor in GPU
// memory, no BindOutputToDevice (an output left on the device, its shape
// unknown beforehand) and no SynchronizeBoundInputs/Outputs (v1.27.0, the
// newest, still has none). So on a GPU the binding moves the same bytes
// across PCIe as Session.Run: each bound input is copied to the device when
// it is bound, each output back into its bound host tensor after the run.
// What it does save: outputs are allocated once, in Go, with the shape
// learnt for the inputs' shapes, and ONNX Runtime writes them there
// directly; Run lets ONNX Runtime allocate every output and then copies it
// into Go memory (onnxruntime_go's createTensorWithCData), once more per
// output per run. What it cannot do: keep the backbone's FPN features on
// the GPU for the mask heads graph (they go device -> host -> device once a
// batch; contract 2's box stages pool them in Go, on the host, anyway).
//
// Output shapes are learnt per input-shape signature from one plain run:
// the bundle's graphs hold only dense tensor work, so their output shapes
// follow from their input shapes. A run whose bound shapes turn out wrong
// (a graph whose output shape depends on input values) is run again plainly
// and its shapes learnt again.
type binding struct {
	io     *ort.IoBinding
	shapes map[string][]ort.Shape // nil entry: outputs that cannot be bound
	keys   []string               // in the order learnt, to bound the map
}

// maxBindingShapes bounds the learnt signatures: the head graphs see a new
// RoI count nearly every frame (the oldest are forgotten first).
const maxBindingShapes = 512

func newBinding(s *ort.DynamicAdvancedSession) (*binding, error) {
	io, err := s.CreateIoBinding()
	if err != nil {
		return nil, err
	}
	return &binding{io: io, shapes: map[string][]ort.Shape{}}, nil
}

func (b *binding) destroy() {
	if b.io != nil {
		b.io.Destroy()
		b.io = nil
	}
}

// shapeKey is the inputs' shapes, e.g. "1x3x320x320,1x2".
func shapeKey(inputs []ort.Value) string {
	var k strings.Builder
	for i, v := range inputs {
		if i > 0 {
			k.WriteByte(',')
		}
		for j, d := range v.GetShape() {
			if j > 0 {
				k.WriteByte('x')
			}
			fmt.Fprint(&k, d)
		}
	}
	return k.String()
}

// learn remembers the shapes of outputs (a plain run's) for key; outputs
// that cannot be made as bound tensors (not tensors, rank 0, an element type
// onnxruntime_go has no Go type for) are remembered as not bindable.
func (b *binding) learn(key string, outs []ort.Value) {
	var shapes []ort.Shape
	for _, v := range outs {
		if v.GetONNXType() != ort.ONNXTypeTensor || len(v.GetShape()) == 0 {
			shapes = nil
			break
		}
		if _, err := newTensorOf(ort.TensorElementDataType(v.DataType()), nil); err != nil {
			shapes = nil
			break
		}
		shapes = append(shapes, v.GetShape())
	}
	if _, ok := b.shapes[key]; !ok {
		if len(b.keys) >= maxBindingShapes {
			delete(b.shapes, b.keys[0])
			b.keys = b.keys[1:]
		}
		b.keys = append(b.keys, key)
	}
	b.shapes[key] = shapes
}

// run binds inputs and new output tensors of shapes and runs the session.
// The binding keeps no reference afterwards: the caller owns inputs and the
// returned outputs.
func (b *binding) run(s *Session, inputs []ort.Value, shapes []ort.Shape) ([]ort.Value, error) {
	outs := make([]ort.Value, len(s.Outputs))
	defer b.io.ClearBoundOutputs()
	defer b.io.ClearBoundInputs()
	fail := func(err error) ([]ort.Value, error) {
		for _, v := range outs {
			if v != nil {
				v.Destroy()
			}
		}
		return nil, err
	}
	for i, in := range inputs {
		if err := b.io.BindInput(s.Inputs[i].Name, in); err != nil {
			return fail(fmt.Errorf("bind input %s: %w", s.Inputs[i].Name, err))
		}
	}
	for i, o := range s.Outputs {
		v, err := newTensorOf(o.DataType, shapes[i])
		if err != nil {
			return fail(fmt.Errorf("output %s: %w", o.Name, err))
		}
		outs[i] = v
		if err := b.io.BindOutput(o.Name, v); err != nil {
			return fail(fmt.Errorf("bind output %s: %w", o.Name, err))
		}
	}
	if err := s.sess.RunWithBinding(b.io); err != nil {
		return fail(err)
	}
	return outs, nil
}

// runBound runs the session through its binding when the inputs' shapes
// have been seen, else plainly, learning the output shapes.
func (s *Session) runBound(inputs []ort.Value) ([]ort.Value, error) {
	key := shapeKey(inputs)
	if shapes, ok := s.bind.shapes[key]; ok && shapes != nil {
		if outs, err := s.bind.run(s, inputs, shapes); err == nil {
			s.boundRuns++
			return outs, nil
		}
		// wrong shapes (or a failing run, which the plain run reports)
	}
	outs, err := s.runPlain(inputs)
	if err != nil {
		return nil, err
	}
	s.bind.learn(key, outs)
	return outs, nil
}

// newTensorOf makes a zeroed host tensor of element type t; a nil shape only
// checks that t has a Go type.
func newTensorOf(t ort.TensorElementDataType, shape ort.Shape) (ort.Value, error) {
	switch t {
	case ort.TensorElementDataTypeFloat:
		return emptyTensor[float32](shape)
	case ort.TensorElementDataTypeDouble:
		return emptyTensor[float64](shape)
	case ort.TensorElementDataTypeInt64:
		return emptyTensor[int64](shape)
	case ort.TensorElementDataTypeInt32:
		return emptyTensor[int32](shape)
	case ort.TensorElementDataTypeInt16:
		return emptyTensor[int16](shape)
	case ort.TensorElementDataTypeInt8:
		return emptyTensor[int8](shape)
	case ort.TensorElementDataTypeUint64:
		return emptyTensor[uint64](shape)
	case ort.TensorElementDataTypeUint32:
		return emptyTensor[uint32](shape)
	case ort.TensorElementDataTypeUint16:
		return emptyTensor[uint16](shape)
	case ort.TensorElementDataTypeUint8:
		return emptyTensor[uint8](shape)
	case ort.TensorElementDataTypeBool:
		return emptyTensor[bool](shape)
	}
	return nil, fmt.Errorf("no Go tensor type for element type %v", t)
}

func emptyTensor[T ort.TensorData](shape ort.Shape) (ort.Value, error) {
	if shape == nil {
		return nil, nil
	}
	return ort.NewEmptyTensor[T](shape)
}
