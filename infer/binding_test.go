package infer

import (
	"testing"

	ort "github.com/yalue/onnxruntime_go"
)

// expandGraph: y = Expand(x, shape), z = Relu(x): y's shape follows shape's
// values, not only the inputs' shapes.
const expandGraph = `
g = helper.make_graph([helper.make_node("Expand", ["x", "shape"], ["y"]), helper.make_node("Relu", ["x"], ["z"])], "expand",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"]), helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, None), helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n"])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 8
onnx.save(m, sys.argv[1])
`

// TestIOBindingLearnsShapesAndRecovers: the first run of an input shape is
// plain (it learns the output shapes), the next ones run bound; when bound
// shapes turn out wrong (an output shape that follows input values) the run
// is made plainly and gives the right result.
func TestIOBindingLearnsShapesAndRecovers(t *testing.T) {
	path := onnxGraph(t, "expand.onnx", expandGraph)
	s, err := OpenSession(path, SessionOptions{IOBinding: BindOn, IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.bind == nil {
		t.Fatal("BindOn on cpu: no binding")
	}
	run := func(x []float32, rows int64) (y, z []float32, yShape ort.Shape) {
		t.Helper()
		xt, err := ort.NewTensor(ort.NewShape(int64(len(x))), x)
		if err != nil {
			t.Fatal(err)
		}
		defer xt.Destroy()
		st, err := ort.NewTensor(ort.NewShape(2), []int64{rows, int64(len(x))})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Destroy()
		outs, err := s.Run(xt, st)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			for _, o := range outs {
				o.Destroy()
			}
		}()
		yd, ys, _ := Float32Output(outs[0])
		zd, _, _ := Float32Output(outs[1])
		return append([]float32(nil), yd...), append([]float32(nil), zd...), ys
	}
	check := func(x []float32, rows int64, wantBound int) {
		t.Helper()
		y, z, ys := run(x, rows)
		if len(ys) != 2 || ys[0] != rows || ys[1] != int64(len(x)) {
			t.Fatalf("y shape %v, want [%d %d]", ys, rows, len(x))
		}
		for r := 0; r < int(rows); r++ {
			for i, v := range x {
				if y[r*len(x)+i] != v {
					t.Fatalf("y[%d,%d] = %v, want %v", r, i, y[r*len(x)+i], v)
				}
			}
		}
		for i, v := range x {
			if want := max(v, 0); z[i] != want {
				t.Fatalf("z[%d] = %v, want %v", i, z[i], want)
			}
		}
		if got := s.boundRuns; got != wantBound {
			t.Fatalf("%d bound runs, want %d", got, wantBound)
		}
	}
	check([]float32{1, -2, 3}, 2, 0) // learns [3],[2] -> [2 3],[3]
	check([]float32{-4, 5, 6}, 2, 1) // bound
	check([]float32{7, 8}, 4, 1)     // a new input shape: learns
	check([]float32{9, -1}, 4, 2)    // bound
	check([]float32{1, 2, 3}, 5, 2)  // same input shapes, y [5 3]: bound shapes wrong, plain run
	check([]float32{4, 5, 6}, 5, 3)  // learnt again, bound
	if len(s.bind.shapes) != 2 || len(s.bind.keys) != 2 {
		t.Errorf("learnt %d signatures (%v), want 2", len(s.bind.shapes), s.bind.keys)
	}
}

func TestIOBindingForgetsOldestShapes(t *testing.T) {
	b := &binding{shapes: map[string][]ort.Shape{}}
	for i := 0; i < maxBindingShapes+10; i++ {
		b.learn(string(rune('a'+i)), nil)
	}
	if len(b.shapes) != maxBindingShapes || len(b.keys) != maxBindingShapes || b.keys[0] != string(rune('a'+10)) {
		t.Fatalf("%d shapes, %d keys, oldest %q", len(b.shapes), len(b.keys), b.keys[0])
	}
}
