package pipeline

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/overlay"
	"github.com/htcstream/htcstream/stream"
)

// OverlayDrawer draws results with an overlay.Renderer and a HUD showing the
// stream's name, output rate and capture-to-draw latency.
type OverlayDrawer struct {
	Renderer *overlay.Renderer
	// HUD turns the status line on.
	HUD bool

	mu   sync.Mutex
	last map[string]hudState
}

type hudState struct {
	at  time.Time
	fps float64
}

// Draw implements Drawer.
func (d *OverlayDrawer) Draw(o *Output) error {
	f := o.Frame
	ins := make([]overlay.Instance, len(o.Result.Detections))
	for i, det := range o.Result.Detections {
		ins[i] = overlay.Instance{
			X1: det.Box.X1, Y1: det.Box.Y1, X2: det.Box.X2, Y2: det.Box.Y2,
			Class: det.Label, Score: det.Score,
			MaskX: det.Mask.X, MaskY: det.Mask.Y, MaskW: det.Mask.W, MaskH: det.Mask.H, Mask: det.Mask.Bits,
		}
	}
	var hud *overlay.HUD
	if d.HUD {
		hud = &overlay.HUD{Stream: o.Stream, FPS: d.rate(o.Stream), Latency: time.Since(f.Captured)}
	}
	return d.Renderer.Draw(f.RGB, f.Width, f.Height, ins, hud)
}

// rate is an exponentially smoothed frames-per-second of a stream's outputs.
func (d *OverlayDrawer) rate(name string) float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.last == nil {
		d.last = map[string]hudState{}
	}
	now := time.Now()
	s := d.last[name]
	if !s.at.IsZero() {
		if dt := now.Sub(s.at).Seconds(); dt > 0 {
			inst := 1 / dt
			if s.fps == 0 {
				s.fps = inst
			} else {
				s.fps = 0.9*s.fps + 0.1*inst
			}
		}
	}
	s.at = now
	d.last[name] = s
	return s.fps
}

// FileSink records one stream's annotated frames as H.264 mp4.
type FileSink struct{ S *stream.FileSink }

// Write implements Sink.
func (s FileSink) Write(o *Output) error {
	return s.S.WriteFrame(o.Frame.Width, o.Frame.Height, o.Frame.RGB, o.Frame.PTS)
}

// Close implements Sink; a file that received no frame is not an error of
// the run (its source ended before producing any, which that source
// reports itself).
func (s FileSink) Close() error {
	if err := s.S.Close(); err != nil && !errors.Is(err, stream.ErrNoFrames) {
		return err
	}
	return nil
}

// DetectionsSink writes every stream's detections to one JSON-lines file.
// Close closes the file once all streams sharing it have closed.
type DetectionsSink struct {
	S       *stream.JSONSink
	Classes []string

	mu    sync.Mutex
	users int
}

// For returns the sink of one stream; call it once per stream.
func (s *DetectionsSink) For() Sink {
	s.mu.Lock()
	s.users++
	s.mu.Unlock()
	return detectionsUser{s}
}

type detectionsUser struct{ s *DetectionsSink }

func (u detectionsUser) Write(o *Output) error {
	fd := stream.FrameDetections{Stream: o.Stream, Seq: o.Frame.Seq, PTS: o.Frame.PTS, Width: o.Frame.Width, Height: o.Frame.Height}
	for _, d := range o.Result.Detections {
		fd.Detections = append(fd.Detections, toStreamDetection(d, u.s.Classes))
	}
	return u.s.S.Write(fd)
}

func (u detectionsUser) Close() error {
	u.s.mu.Lock()
	u.s.users--
	last := u.s.users == 0
	u.s.mu.Unlock()
	if last {
		return u.s.S.Close()
	}
	return nil
}

func toStreamDetection(d cascade.Detection, classes []string) stream.Detection {
	name := fmt.Sprintf("class %d", d.Label)
	if d.Label >= 0 && d.Label < len(classes) {
		name = classes[d.Label]
	}
	return stream.Detection{
		Box: [4]float32{d.Box.X1, d.Box.Y1, d.Box.X2, d.Box.Y2}, Score: d.Score,
		Label: name, ClassID: d.Label, StageScores: d.StageScores,
		Mask: stream.MaskRegion{X: d.Mask.X, Y: d.Mask.Y, W: d.Mask.W, H: d.Mask.H, Bits: d.Mask.Bits},
	}
}
