package infer

import (
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxScaleSide bounds a test scale's sides: beyond it a frame's tensors
// take gigabytes (an R-50 at 4096x4096 needs ~20 GB), so a larger scale
// is a configuration mistake, reported as one, not an out-of-memory crash.
const MaxScaleSide = 4096

// ParseScale reads a test scale written LONGxSHORT (either order, as
// mmdetection's img_scale), e.g. "1333x800". It is the one parser of
// scales for flags and configuration files alike.
func ParseScale(s string) (Scale, error) {
	a, b, ok := strings.Cut(strings.ToLower(strings.TrimSpace(s)), "x")
	if !ok {
		return Scale{}, fmt.Errorf("%q is not LONGxSHORT (e.g. 1333x800)", s)
	}
	x, err1 := strconv.Atoi(strings.TrimSpace(a))
	y, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil {
		return Scale{}, fmt.Errorf("%q is not LONGxSHORT with whole numbers (e.g. 1333x800)", s)
	}
	return NewScale(x, y)
}

// NewScale is the scale of sides a and b in either order, checked against
// 1..MaxScaleSide.
func NewScale(a, b int) (Scale, error) {
	if a <= 0 || b <= 0 {
		return Scale{}, fmt.Errorf("%dx%d: sides must be positive", a, b)
	}
	if a > MaxScaleSide || b > MaxScaleSide {
		return Scale{}, fmt.Errorf("%dx%d: sides above %d are not supported (memory grows with the square of the side)", a, b, MaxScaleSide)
	}
	return Scale{Long: max(a, b), Short: min(a, b)}, nil
}

// ParseScales reads a comma-separated list of scales ("800x480,1040x624").
func ParseScales(s string) ([]Scale, error) {
	var out []Scale
	for _, part := range strings.Split(s, ",") {
		sc, err := ParseScale(part)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

// String writes the scale as ParseScale reads it.
func (s Scale) String() string { return fmt.Sprintf("%dx%d", s.Long, s.Short) }

// UnmarshalYAML takes "1333x800" or [1333, 800] (either order).
func (s *Scale) UnmarshalYAML(n *yaml.Node) error {
	var err error
	switch n.Kind {
	case yaml.ScalarNode:
		*s, err = ParseScale(n.Value)
	case yaml.SequenceNode:
		var pair []int
		if err = n.Decode(&pair); err == nil {
			if len(pair) != 2 {
				err = fmt.Errorf("%v is not a [long, short] pair", pair)
			} else {
				*s, err = NewScale(pair[0], pair[1])
			}
		}
	default:
		err = fmt.Errorf("a scale is LONGxSHORT or [long, short]")
	}
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}

// MarshalYAML writes LONGxSHORT.
func (s Scale) MarshalYAML() (any, error) { return s.String(), nil }

// DefaultScale is the bundle's own test scale, its first test_scales entry
// as a Scale: the one view a frame gets when no test-time views are asked
// for.
func (m *Manifest) DefaultScale() Scale {
	s := m.Input.TestScales[0]
	return Scale{Long: max(s[0], s[1]), Short: min(s[0], s[1])}
}
