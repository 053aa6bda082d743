package infer

import (
	_ "embed"
	"fmt"
	"strings"

	ort "github.com/yalue/onnxruntime_go"
	"gopkg.in/yaml.v3"
)

// graphsYAML is the contract's table of graph signatures, shared with the
// exporter (training/htc/export/contract.py reads the same file), so the
// names and positions the exporter writes are the ones Go checks and reads.
//
//go:embed graphs.yaml
var graphsYAML []byte

// GraphKind names a graph signature of the contract.
type GraphKind string

// The graphs of a bundle. Every box stage graph has the GraphBoxStage
// signature.
const (
	GraphBackbone  GraphKind = "backbone"
	GraphBoxStage  GraphKind = "bbox_stage"
	GraphMaskHeads GraphKind = "mask_heads"
)

// Port is one input or output of a graph.
type Port struct {
	Name  string
	Rank  int
	DType ort.TensorElementDataType
}

// Signature is a graph's inputs and outputs, in order.
type Signature struct {
	Inputs, Outputs []Port
}

var signatures = mustParseSignatures(graphsYAML)

var elementTypes = map[string]ort.TensorElementDataType{
	"float32": ort.TensorElementDataTypeFloat,
	"int64":   ort.TensorElementDataTypeInt64,
}

func parseSignatures(b []byte) (map[GraphKind]Signature, error) {
	var raw map[GraphKind]struct {
		Inputs  [][]string `yaml:"inputs"`
		Outputs [][]string `yaml:"outputs"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, err
	}
	ports := func(kind GraphKind, rows [][]string) ([]Port, error) {
		out := make([]Port, len(rows))
		for i, r := range rows {
			if len(r) != 3 {
				return nil, fmt.Errorf("%s: %v is not [name, rank, type]", kind, r)
			}
			var rank int
			if _, err := fmt.Sscan(r[1], &rank); err != nil || rank < 0 {
				return nil, fmt.Errorf("%s: %s: rank %q", kind, r[0], r[1])
			}
			dt, ok := elementTypes[r[2]]
			if !ok {
				return nil, fmt.Errorf("%s: %s: element type %q", kind, r[0], r[2])
			}
			out[i] = Port{Name: r[0], Rank: rank, DType: dt}
		}
		return out, nil
	}
	sigs := map[GraphKind]Signature{}
	for _, kind := range []GraphKind{GraphBackbone, GraphBoxStage, GraphMaskHeads} {
		r, ok := raw[kind]
		if !ok {
			return nil, fmt.Errorf("no %s signature", kind)
		}
		in, err := ports(kind, r.Inputs)
		if err != nil {
			return nil, err
		}
		out, err := ports(kind, r.Outputs)
		if err != nil {
			return nil, err
		}
		sigs[kind] = Signature{Inputs: in, Outputs: out}
	}
	if len(raw) != len(sigs) {
		return nil, fmt.Errorf("%d signatures, the contract has %d graph kinds", len(raw), len(sigs))
	}
	return sigs, nil
}

// mustParseSignatures panics: the table is compiled in, so a broken one
// fails every test run before anything ships.
func mustParseSignatures(b []byte) map[GraphKind]Signature {
	s, err := parseSignatures(b)
	if err != nil {
		panic("infer/graphs.yaml: " + err.Error())
	}
	return s
}

// SignatureOf returns the contract's signature of a graph kind.
func SignatureOf(kind GraphKind) Signature { return signatures[kind] }

// OutputIndex returns the position of output name among kind's outputs. A
// name the contract lacks panics: callers pass constant names, checked by
// the tests that load a bundle.
func OutputIndex(kind GraphKind, name string) int {
	for i, p := range signatures[kind].Outputs {
		if p.Name == name {
			return i
		}
	}
	panic(fmt.Sprintf("infer: the %s graph has no output %q (infer/graphs.yaml)", kind, name))
}

// checkSignature compares a session's inputs and outputs with the contract,
// by name, order, rank and element type.
func checkSignature(s *Session, want Signature) error {
	for side, got := range [2][]ort.InputOutputInfo{s.Inputs, s.Outputs} {
		kind, ports := "inputs", want.Inputs
		if side == 1 {
			kind, ports = "outputs", want.Outputs
		}
		if len(got) != len(ports) {
			return fmt.Errorf("%d %s, the contract has %d (%s)", len(got), kind, len(ports), portNames(ports))
		}
		for i, w := range ports {
			g := got[i]
			if g.Name != w.Name {
				return fmt.Errorf("%s %d is %q, the contract has %q (%s)", kind, i, g.Name, w.Name, portNames(ports))
			}
			if g.OrtValueType != ort.ONNXTypeTensor || g.DataType != w.DType {
				return fmt.Errorf("%s %q has element type %v, want %v", kind, g.Name, g.DataType, w.DType)
			}
			if len(g.Dimensions) != w.Rank {
				return fmt.Errorf("%s %q has rank %d, want %d", kind, g.Name, len(g.Dimensions), w.Rank)
			}
		}
	}
	return nil
}

func portNames(ps []Port) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return strings.Join(names, ", ")
}
