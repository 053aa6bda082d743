package infer

import (
	"errors"
	"fmt"
)

// QuantSchemeQDQU8S8 is the scheme python3 -m htc.quantize writes: ONNX
// QuantizeLinear/DequantizeLinear pairs around Conv and Gemm, uint8
// activations (one scale per tensor), int8 weights (per output channel for
// Conv). ONNX Runtime fuses them into integer kernels; the graphs' inputs
// and outputs stay float32, so nothing else in Go changes.
const QuantSchemeQDQU8S8 = "qdq-u8s8"

// Quantization is a manifest's optional quantization section
// (docs/model-bundle.md).
type Quantization struct {
	// Scheme is how the graphs are quantised: QuantSchemeQDQU8S8.
	Scheme string `yaml:"scheme"`
	// Graphs names the quantised graph groups: backbone, bbox_stages (all
	// stage graphs) and mask_heads.
	Graphs []string `yaml:"graphs"`
	// Calibration says what the activation ranges came from (free text).
	Calibration string `yaml:"calibration"`
}

func (q *Quantization) validate() error {
	if q.Scheme != QuantSchemeQDQU8S8 {
		return fmt.Errorf("quantization.scheme %q, this build reads %q", q.Scheme, QuantSchemeQDQU8S8)
	}
	if len(q.Graphs) == 0 {
		return errors.New("quantization.graphs is empty")
	}
	seen := map[string]bool{}
	for _, g := range q.Graphs {
		switch g {
		case "backbone", "bbox_stages", "mask_heads":
		default:
			return fmt.Errorf("quantization.graphs: unknown graph %q (want backbone, bbox_stages, mask_heads)", g)
		}
		if seen[g] {
			return fmt.Errorf("quantization.graphs names %q twice", g)
		}
		seen[g] = true
	}
	return nil
}
