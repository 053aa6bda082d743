package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/htcstream/htcstream/decode"
)

// runImages decodes a folder's pictures one file at a time, in natural name
// order (img2 before img10). A file each keeps every picture's own size and
// lets an error name the file.
func (r *Runner) runImages(ctx context.Context, emit func(*decode.Frame) error, tl *timeline) error {
	r.set(Event{State: StateConnecting})
	files, err := imageFiles(r.src.Location)
	if err != nil {
		return r.finish(ctx, err)
	}
	// Every image is a session of its own, so the step never comes from
	// two pictures: it is the folder's rate throughout.
	tl.step = r.step
	for i, path := range files {
		if ctx.Err() != nil {
			break
		}
		f, err := decodeImage(ctx, path, r.id)
		if err != nil {
			return r.finish(ctx, fmt.Errorf("image folder %s: %w", r.name, err))
		}
		tl.newSession()
		tl.stamp(f, false)
		if i == 0 {
			r.set(Event{State: StateLive})
		}
		if err := emit(f); err != nil {
			return r.finish(ctx, &emitError{err})
		}
	}
	return r.finish(ctx, nil)
}

func decodeImage(ctx context.Context, path, streamID string) (*decode.Frame, error) {
	d, err := decode.OpenContext(ctx, path, decode.Options{StreamID: streamID})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	f, err := d.Next()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s holds no picture", path)
	}
	return f, err
}

// imageExts are the still formats a folder source reads.
var imageExts = map[string]bool{".png": true, ".jpg": true, ".jpeg": true}

func imageFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("image folder %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && imageExts[strings.ToLower(filepath.Ext(e.Name()))] {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("image folder %s has no .png, .jpg or .jpeg files", dir)
	}
	slices.SortFunc(names, naturalCompare)
	for i, n := range names {
		names[i] = filepath.Join(dir, n)
	}
	return names, nil
}

// naturalCompare orders names as people number files: runs of digits
// compare by value, so frame9 comes before frame10. Names equal by value
// (img2, img002) fall back to byte order, so the order is total.
func naturalCompare(a, b string) int {
	if c := naturalCore(a, b); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

func naturalCore(a, b string) int {
	for a != "" && b != "" {
		da, db := digitRun(a), digitRun(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := len(na) - len(nb); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func digitRun(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}
