package decode

import (
	"errors"
	"fmt"
	"io"
)

// Sample decodes up to n frames of a file spread evenly over it (the first,
// the last and evenly between, by the frame count the container states;
// the first n when it states none). A file with fewer frames gives all of
// them. Frames are read in order, so the cost is one decode of the file up
// to the last frame picked.
func Sample(url string, n int) ([]*Frame, error) {
	if n < 1 {
		return nil, fmt.Errorf("sample %s: %d frames asked, want at least 1", url, n)
	}
	d, err := Open(url, Options{})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	total := d.FrameCount()
	want := map[int64]bool{}
	var last int64
	for i := 0; i < n; i++ {
		k := int64(i)
		if total > int64(n) {
			k = int64(i) * (total - 1) / int64(max(n-1, 1))
		}
		want[k] = true
		last = max(last, k)
	}
	var out []*Frame
	for seq := int64(0); seq <= last; seq++ {
		f, err := d.Next()
		if errors.Is(err, io.EOF) {
			break // the container overstated its length: what was read is kept
		}
		if err != nil {
			if len(out) > 0 {
				break // damage late in the file: the frames before it are good
			}
			return nil, err
		}
		if want[seq] {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no frames decoded", url)
	}
	return out, nil
}
