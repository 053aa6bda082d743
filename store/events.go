package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Event is what the store keeps of a tracked object: one row per event id,
// brought up to date by each new, update and end event of its track.
type Event struct {
	// ID is the event id (docs/events.md): the same for every event of
	// one track, unique across restarts and workers.
	ID      string `json:"id"`
	Camera  string `json:"camera"`
	TrackID int64  `json:"track_id"`
	Label   string `json:"label"`
	ClassID int    `json:"class_id"`
	// Zones is every zone the track entered, in order (the event's
	// entered_zones); the zone filter matches any of them.
	Zones []string `json:"entered_zones"`
	// FirstSeen and LastSeen are the wall clock of the track's first and
	// latest frames.
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Ended says the track's end event arrived; until then LastSeen
	// grows with each update.
	Ended bool `json:"ended"`
	// BestScore and Box are the best frame's score and box ([x1, y1, x2,
	// y2] in pixels of a Width x Height frame), StageScores each cascade
	// stage's own score there.
	BestScore   float32    `json:"best_score"`
	Box         [4]float32 `json:"best_box"`
	Width       int        `json:"width"`
	Height      int        `json:"height"`
	StageScores []float32  `json:"stage_scores"`
	// Snapshot and Clip are paths on the worker's disk, SnapshotURL and
	// ClipURL where its web server serves them; empty when none. An
	// update without them keeps the ones stored.
	Snapshot    string `json:"snapshot"`
	SnapshotURL string `json:"snapshot_url"`
	Clip        string `json:"clip"`
	ClipURL     string `json:"clip_url"`
	// Worker names the htcstream process that saw it.
	Worker string `json:"worker"`
}

// MarshalJSON writes times as RFC 3339 UTC with milliseconds, as the event
// JSON does, and adds duration_s.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	zs, ss := e.Zones, e.StageScores
	if zs == nil {
		zs = []string{}
	}
	if ss == nil {
		ss = []float32{}
	}
	p := plain(e)
	p.Zones, p.StageScores = zs, ss
	return json.Marshal(struct {
		plain
		FirstSeen string  `json:"first_seen"`
		LastSeen  string  `json:"last_seen"`
		DurationS float64 `json:"duration_s"`
	}{p, e.FirstSeen.UTC().Format(timeLayout), e.LastSeen.UTC().Format(timeLayout), e.LastSeen.Sub(e.FirstSeen).Seconds()})
}

const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// ErrBadEvent is wrapped by the errors about events the store refuses.
var ErrBadEvent = errors.New("bad event")

func (e *Event) validate() error {
	if e.ID == "" || e.Camera == "" || e.Label == "" {
		return fmt.Errorf("%w: id %q, camera %q, label %q: all three are needed", ErrBadEvent, e.ID, e.Camera, e.Label)
	}
	fin := func(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }
	ok := fin(e.BestScore)
	for _, v := range e.Box {
		ok = ok && fin(v)
	}
	for _, v := range e.StageScores {
		ok = ok && fin(v)
	}
	if !ok {
		return fmt.Errorf("%w: %s: a score or box is not finite", ErrBadEvent, e.ID)
	}
	return nil
}

const eventCols = "id, camera, track_id, label, class_id, zones, first_seen, last_seen, ended, best_score, box, width, height, stage_scores, snapshot, snapshot_url, clip, clip_url, worker"

// queries are the statements, with the driver's placeholders.
type queries struct {
	upsert, addZone         string
	putSegment              string
	pruneZones, pruneEvents string
	pruneSegments           string
}

func prepare(driver string) queries {
	return queries{
		// An update's first_seen is the track's, the same as new's; the
		// snapshot and clip are kept when an update comes without them,
		// and an ended event stays ended.
		upsert: rebind(driver, `INSERT INTO events (`+eventCols+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET
				label = excluded.label, class_id = excluded.class_id, zones = excluded.zones,
				last_seen = excluded.last_seen,
				ended = CASE WHEN events.ended = 1 THEN 1 ELSE excluded.ended END,
				best_score = excluded.best_score, box = excluded.box,
				width = excluded.width, height = excluded.height, stage_scores = excluded.stage_scores,
				snapshot = CASE WHEN excluded.snapshot <> '' THEN excluded.snapshot ELSE events.snapshot END,
				snapshot_url = CASE WHEN excluded.snapshot_url <> '' THEN excluded.snapshot_url ELSE events.snapshot_url END,
				clip = CASE WHEN excluded.clip <> '' THEN excluded.clip ELSE events.clip END,
				clip_url = CASE WHEN excluded.clip_url <> '' THEN excluded.clip_url ELSE events.clip_url END,
				worker = excluded.worker`),
		addZone:       rebind(driver, "INSERT INTO event_zones (event_id, zone) VALUES (?, ?) ON CONFLICT DO NOTHING"),
		putSegment:    rebind(driver, segmentUpsert),
		pruneZones:    rebind(driver, "DELETE FROM event_zones WHERE event_id IN (SELECT id FROM events WHERE last_seen < ?)"),
		pruneEvents:   rebind(driver, "DELETE FROM events WHERE last_seen < ?"),
		pruneSegments: rebind(driver, "DELETE FROM segments WHERE end_ms < ?"),
	}
}

// PutEvents stores events in one transaction, in order: each inserts its
// row or brings it up to date (the latest event of a track wins, but an
// end is never undone and a snapshot or clip never forgotten).
func (s *Store) PutEvents(ctx context.Context, evs ...Event) error {
	for i := range evs {
		if err := evs[i].validate(); err != nil {
			return err
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("event store: %w", err)
	}
	defer tx.Rollback()
	for i := range evs {
		if err := s.putEvent(ctx, tx, &evs[i]); err != nil {
			return fmt.Errorf("event store: %s: %w", evs[i].ID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("event store: %w", err)
	}
	return nil
}

func (s *Store) putEvent(ctx context.Context, tx *sql.Tx, e *Event) error {
	zones, _ := json.Marshal(nonNil(e.Zones))
	box, _ := json.Marshal(e.Box)
	stages, _ := json.Marshal(nonNil(e.StageScores))
	ended := 0
	if e.Ended {
		ended = 1
	}
	if _, err := tx.ExecContext(ctx, s.q.upsert, e.ID, e.Camera, e.TrackID, e.Label, e.ClassID, string(zones),
		ms(e.FirstSeen), ms(e.LastSeen), ended, e.BestScore, string(box), e.Width, e.Height, string(stages),
		e.Snapshot, e.SnapshotURL, e.Clip, e.ClipURL, e.Worker); err != nil {
		return err
	}
	// Zones are only ever added to a track's entered list, so adding the
	// missing ones is enough; no delete and re-insert per update.
	for _, z := range e.Zones {
		if _, err := tx.ExecContext(ctx, s.q.addZone, e.ID, z); err != nil {
			return err
		}
	}
	return nil
}

func nonNil[T any](v []T) []T {
	if v == nil {
		return []T{}
	}
	return v
}

// Query filters events. Zero fields do not filter.
type Query struct {
	// ID keeps the one event of that id.
	ID            string
	Camera, Label string
	// Zone keeps events that entered it.
	Zone string
	// After and Before keep events that began in [After, Before).
	After, Before time.Time
	// Limit bounds the page; 0 means DefaultLimit, and more than
	// MaxLimit is MaxLimit.
	Limit int
}

// DefaultLimit and MaxLimit bound a page of events or segments.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

func (q Query) limit() int {
	switch {
	case q.Limit <= 0:
		return DefaultLimit
	case q.Limit > MaxLimit:
		return MaxLimit
	}
	return q.Limit
}

// Events returns the events that match q, newest first (by first seen).
// The next page is the same query with Before set to the last event's
// FirstSeen (events that began in the same millisecond are on one page
// unless the page ends among them).
func (s *Store) Events(ctx context.Context, q Query) ([]Event, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		where = append(where, cond)
		args = append(args, v)
	}
	if q.ID != "" {
		add("id = ?", q.ID)
	}
	if q.Camera != "" {
		add("camera = ?", q.Camera)
	}
	if q.Label != "" {
		add("label = ?", q.Label)
	}
	if q.Zone != "" {
		add("EXISTS (SELECT 1 FROM event_zones z WHERE z.event_id = events.id AND z.zone = ?)", q.Zone)
	}
	if !q.After.IsZero() {
		add("first_seen >= ?", ms(q.After))
	}
	if !q.Before.IsZero() {
		add("first_seen < ?", ms(q.Before))
	}
	sqlq := "SELECT " + eventCols + " FROM events"
	if len(where) > 0 {
		sqlq += " WHERE " + strings.Join(where, " AND ")
	}
	sqlq += " ORDER BY first_seen DESC, id DESC LIMIT ?"
	args = append(args, q.limit())
	rows, err := s.db.QueryContext(ctx, rebind(s.driver, sqlq), args...)
	if err != nil {
		return nil, fmt.Errorf("event store: %w", err)
	}
	defer rows.Close()
	out := []Event{}
	for rows.Next() {
		var (
			e                  Event
			zones, box, stages string
			first, last        int64
			ended              int
			bestScore          float64
		)
		if err := rows.Scan(&e.ID, &e.Camera, &e.TrackID, &e.Label, &e.ClassID, &zones, &first, &last, &ended,
			&bestScore, &box, &e.Width, &e.Height, &stages, &e.Snapshot, &e.SnapshotURL, &e.Clip, &e.ClipURL, &e.Worker); err != nil {
			return nil, fmt.Errorf("event store: %w", err)
		}
		e.FirstSeen, e.LastSeen, e.Ended, e.BestScore = fromMS(first), fromMS(last), ended != 0, float32(bestScore)
		if err := errors.Join(json.Unmarshal([]byte(zones), &e.Zones), json.Unmarshal([]byte(box), &e.Box),
			json.Unmarshal([]byte(stages), &e.StageScores)); err != nil {
			return nil, fmt.Errorf("event store: event %s: %w", e.ID, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("event store: %w", err)
	}
	return out, nil
}

// Prune deletes the events last seen and the segments ended before cutoff
// (the rows only: the files are their writers' to remove) and says how many
// of each went.
func (s *Store) Prune(ctx context.Context, cutoff time.Time) (events, segments int64, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("event store: prune: %w", err)
	}
	defer tx.Rollback()
	c := ms(cutoff)
	if _, err := tx.ExecContext(ctx, s.q.pruneZones, c); err != nil {
		return 0, 0, fmt.Errorf("event store: prune: %w", err)
	}
	r, err := tx.ExecContext(ctx, s.q.pruneEvents, c)
	if err != nil {
		return 0, 0, fmt.Errorf("event store: prune: %w", err)
	}
	events, _ = r.RowsAffected()
	r, err = tx.ExecContext(ctx, s.q.pruneSegments, c)
	if err != nil {
		return 0, 0, fmt.Errorf("event store: prune: %w", err)
	}
	segments, _ = r.RowsAffected()
	if err := tx.Commit(); err != nil {
		return 0, 0, fmt.Errorf("event store: prune: %w", err)
	}
	return events, segments, nil
}
