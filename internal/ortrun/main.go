// Command ortrun runs one ONNX graph with ONNX Runtime on raw tensors and
// writes every graph output as a raw little-endian file. It is the engine of
// the training module's post-export INT8 pass (training/htc/quantize.py),
// which has no Python ONNX Runtime: the pass adds the tensors it needs as
// graph outputs and reads them back from here to calibrate.
//
//	go run ./internal/ortrun REQUEST.json
//
// REQUEST.json:
//
//	{"model": "graph.onnx", "threads": 2,
//	 "runs": [{"inputs": [{"name": "image", "dtype": "float32", "shape": [1,3,320,320], "file": "x.bin"}],
//	           "out_dir": "run0"}]}
//
// Each run writes out_dir/NNN.bin per output (in the graph's output order)
// and out_dir/outputs.json: [{"name", "dtype", "shape", "file"}].
//
// "minmax": ["name", ...] in the request makes those float32 outputs come
// back as their [min, max] (shape [2]; shape [0] when the tensor is empty)
// instead of whole: calibrating a real-size backbone adds ~150 activations
// as outputs, gigabytes a run that the pass only takes the range of.
package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/htcstream/htcstream/infer"
)

type tensorFile struct {
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
	File  string  `json:"file"`
}

type run struct {
	Inputs []tensorFile `json:"inputs"`
	OutDir string       `json:"out_dir"`
}

type request struct {
	Model   string   `json:"model"`
	Threads int      `json:"threads"`
	Runs    []run    `json:"runs"`
	MinMax  []string `json:"minmax"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: ortrun REQUEST.json")
		os.Exit(2)
	}
	if err := realMain(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "ortrun:", err)
		os.Exit(1)
	}
}

func realMain(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var req request
	if err := json.Unmarshal(b, &req); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	lib, err := infer.FindLibrary("")
	if err != nil {
		return err
	}
	if err := infer.InitRuntime(lib); err != nil {
		return err
	}
	sess, err := infer.OpenSession(req.Model, infer.SessionOptions{IntraOpThreads: req.Threads})
	if err != nil {
		return err
	}
	defer sess.Close()
	reduce := map[string]bool{}
	for _, n := range req.MinMax {
		reduce[n] = true
	}
	for i, r := range req.Runs {
		if err := runOnce(sess, r, reduce); err != nil {
			return fmt.Errorf("run %d: %w", i, err)
		}
	}
	return nil
}

func runOnce(sess *infer.Session, r run, reduce map[string]bool) error {
	byName := map[string]tensorFile{}
	for _, in := range r.Inputs {
		byName[in.Name] = in
	}
	inputs := make([]ort.Value, len(sess.Inputs))
	defer func() {
		for _, v := range inputs {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, info := range sess.Inputs {
		tf, ok := byName[info.Name]
		if !ok {
			return fmt.Errorf("no tensor for input %q", info.Name)
		}
		v, err := readTensor(tf)
		if err != nil {
			return fmt.Errorf("input %q: %w", info.Name, err)
		}
		inputs[i] = v
	}
	outs, err := sess.Run(inputs...)
	if err != nil {
		return err
	}
	defer func() {
		for _, v := range outs {
			v.Destroy()
		}
	}()
	if err := os.MkdirAll(r.OutDir, 0o755); err != nil {
		return err
	}
	var written []tensorFile
	for i, v := range outs {
		tf := tensorFile{Name: sess.Outputs[i].Name, Shape: v.GetShape(), File: fmt.Sprintf("%03d.bin", i)}
		var data []byte
		switch t := v.(type) {
		case *ort.Tensor[float32]:
			if reduce[tf.Name] {
				r := minMax(t.GetData())
				tf.DType, tf.Shape, data = "float32", []int64{int64(len(r))}, bytesOf(r)
				break
			}
			tf.DType, data = "float32", bytesOf(t.GetData())
		case *ort.Tensor[int64]:
			tf.DType, data = "int64", bytesOf(t.GetData())
		case *ort.Tensor[int32]:
			tf.DType, data = "int32", bytesOf(t.GetData())
		case *ort.Tensor[uint8]:
			tf.DType, data = "uint8", bytesOf(t.GetData())
		case *ort.Tensor[int8]:
			tf.DType, data = "int8", bytesOf(t.GetData())
		case *ort.Tensor[bool]:
			tf.DType, data = "bool", bytesOf(t.GetData())
		default:
			return fmt.Errorf("output %q: unsupported type %T", tf.Name, v)
		}
		if err := os.WriteFile(filepath.Join(r.OutDir, tf.File), data, 0o644); err != nil {
			return err
		}
		written = append(written, tf)
	}
	j, err := json.Marshal(written)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(r.OutDir, "outputs.json"), j, 0o644)
}

func readTensor(tf tensorFile) (ort.Value, error) {
	raw, err := os.ReadFile(tf.File)
	if err != nil {
		return nil, err
	}
	n := int64(1)
	for _, d := range tf.Shape {
		n *= d
	}
	shape := ort.NewShape(tf.Shape...)
	switch tf.DType {
	case "float32":
		return newTensor[float32](shape, raw, n)
	case "int64":
		return newTensor[int64](shape, raw, n)
	}
	return nil, fmt.Errorf("unsupported dtype %q", tf.DType)
}

func newTensor[T float32 | int64](shape ort.Shape, raw []byte, n int64) (ort.Value, error) {
	data := make([]T, n)
	if int64(len(raw)) != n*int64(unsafe.Sizeof(*new(T))) {
		return nil, fmt.Errorf("%d bytes for %d elements", len(raw), n)
	}
	if err := binary.Read(bytes.NewReader(raw), binary.LittleEndian, data); err != nil {
		return nil, err
	}
	return ort.NewTensor(shape, data)
}

// bytesOf views a tensor's data as bytes (little-endian machines only, as
// every platform ONNX Runtime's CPU build targets here).
func bytesOf[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	var zero T
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(zero)))
}

// minMax is [min, max] of v, or nothing for an empty v.
func minMax(v []float32) []float32 {
	if len(v) == 0 {
		return nil
	}
	lo, hi := v[0], v[0]
	for _, x := range v[1:] {
		lo, hi = min(lo, x), max(hi, x)
	}
	return []float32{lo, hi}
}
