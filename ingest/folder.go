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
// order (img2 before img10). A file each keeps every picture's own size
// (consumers get each picture as it is: detections in its own pixels) and
// lets a message name the file. A picture that cannot be read is skipped
// with a warning and counted (Skipped); only a folder none of whose
// pictures can be read is an error. With Config.Loop the folder starts
// again at its end, the unreadable pictures left out.
func (r *Runner) runImages(ctx context.Context, emit func(*decode.Frame) error, tl *timeline) error {
	r.set(Event{State: StateConnecting})
	files, err := imageFiles(r.src.Location)
	if err != nil {
		return r.finish(ctx, err)
	}
	// Every image is a session of its own, so the step never comes from
	// two pictures: it is the folder's rate throughout.
	tl.step = r.step
	var lastW, lastH int
	for pass := 1; ; pass++ {
		readable := files[:0:0]
		for _, path := range files {
			if ctx.Err() != nil {
				return r.finish(ctx, nil)
			}
			f, err := decodeImage(ctx, path, r.id)
			if err != nil {
				if ctx.Err() != nil {
					return r.finish(ctx, nil)
				}
				n := r.skipped.Add(1)
				r.cfg.Logger.Warn("image skipped", "source", r.name, "file", filepath.Base(path), "err", err.Error(), "skipped", n)
				continue
			}
			readable = append(readable, path)
			f.Name = filepath.Base(path)
			if lastW != 0 && (f.Width != lastW || f.Height != lastH) {
				r.cfg.Logger.Info("image size changed", "source", r.name, "file", f.Name,
					"from", fmt.Sprintf("%dx%d", lastW, lastH), "to", fmt.Sprintf("%dx%d", f.Width, f.Height))
			}
			lastW, lastH = f.Width, f.Height
			tl.newSession()
			tl.stamp(f)
			if r.State() != StateLive {
				r.set(Event{State: StateLive})
			}
			if err := emit(f); err != nil {
				return r.finish(ctx, &emitError{err})
			}
		}
		if len(readable) == 0 {
			return r.finish(ctx, fmt.Errorf("image folder %s: none of its %d pictures could be read (see the warnings above)", r.name, len(files)))
		}
		if !r.cfg.Loop {
			if n := r.skipped.Load(); n > 0 {
				r.cfg.Logger.Warn("image folder done with pictures skipped", "source", r.name, "read", len(readable), "skipped", n)
			}
			return r.finish(ctx, nil)
		}
		files = readable
		r.cfg.Logger.Debug("source loops", "source", r.name, "pass", pass+1, "next_seq", tl.seq)
	}
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
