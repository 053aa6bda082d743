package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Segment is one recording file of a camera.
type Segment struct {
	Camera string `json:"camera"`
	// Path is the file on the worker's disk; with Worker it names the
	// segment.
	Path string `json:"path"`
	// Start and End are the wall clock of its first and last frames; End
	// grows while the segment is being written.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Bytes int64     `json:"bytes"`
	// Worker names the htcstream process that wrote it.
	Worker string `json:"worker"`
}

// MarshalJSON writes times as the events do.
func (g Segment) MarshalJSON() ([]byte, error) {
	type plain Segment
	return json.Marshal(struct {
		plain
		Start string `json:"start"`
		End   string `json:"end"`
	}{plain(g), g.Start.UTC().Format(timeLayout), g.End.UTC().Format(timeLayout)})
}

const segmentUpsert = `INSERT INTO segments (worker, path, camera, start_ms, end_ms, bytes) VALUES (?, ?, ?, ?, ?, ?)
	ON CONFLICT (worker, path) DO UPDATE SET end_ms = excluded.end_ms, bytes = excluded.bytes`

// PutSegment records a segment, or its new end and size while it grows.
func (s *Store) PutSegment(ctx context.Context, g Segment) error {
	if g.Camera == "" || g.Path == "" {
		return errors.New("event store: a segment needs a camera and a path")
	}
	if _, err := s.db.ExecContext(ctx, s.q.putSegment, g.Worker, g.Path, g.Camera, ms(g.Start), ms(g.End), g.Bytes); err != nil {
		return fmt.Errorf("event store: segment %s: %w", g.Path, err)
	}
	return nil
}

// DeleteSegment forgets a segment the worker's retention deleted, so the
// timeline offers no file that is gone.
func (s *Store) DeleteSegment(ctx context.Context, worker, path string) error {
	if _, err := s.db.ExecContext(ctx, rebind(s.driver, "DELETE FROM segments WHERE worker = ? AND path = ?"), worker, path); err != nil {
		return fmt.Errorf("event store: forget segment %s: %w", path, err)
	}
	return nil
}

// SegmentQuery filters segments. Zero fields do not filter.
type SegmentQuery struct {
	Camera string
	// After and Before keep the segments that overlap [After, Before).
	After, Before time.Time
	// Limit as in Query.
	Limit int
}

// Segments returns the segments that match q, oldest first, so that a
// timeline reads in order.
func (s *Store) Segments(ctx context.Context, q SegmentQuery) ([]Segment, error) {
	var where []string
	var args []any
	if q.Camera != "" {
		where, args = append(where, "camera = ?"), append(args, q.Camera)
	}
	if !q.After.IsZero() {
		where, args = append(where, "end_ms >= ?"), append(args, ms(q.After))
	}
	if !q.Before.IsZero() {
		where, args = append(where, "start_ms < ?"), append(args, ms(q.Before))
	}
	sqlq := "SELECT worker, path, camera, start_ms, end_ms, bytes FROM segments"
	if len(where) > 0 {
		sqlq += " WHERE " + strings.Join(where, " AND ")
	}
	sqlq += " ORDER BY start_ms, worker, path LIMIT ?"
	args = append(args, Query{Limit: q.Limit}.limit())
	rows, err := s.db.QueryContext(ctx, rebind(s.driver, sqlq), args...)
	if err != nil {
		return nil, fmt.Errorf("event store: %w", err)
	}
	defer rows.Close()
	out := []Segment{}
	for rows.Next() {
		var g Segment
		var start, end int64
		if err := rows.Scan(&g.Worker, &g.Path, &g.Camera, &start, &end, &g.Bytes); err != nil {
			return nil, fmt.Errorf("event store: %w", err)
		}
		g.Start, g.End = fromMS(start), fromMS(end)
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("event store: %w", err)
	}
	return out, nil
}
