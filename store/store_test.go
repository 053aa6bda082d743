package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/htcstream/htcstream/internal/pgtest"
)

// stores runs f against SQLite on disk and against a PostgreSQL the test
// starts.
func stores(t *testing.T, f func(t *testing.T, open func() *Store)) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "db", "events.db")
		f(t, func() *Store { return openT(t, Config{Driver: SQLite, Path: path}) })
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := pgServer(t).NewDB(t)
		f(t, func() *Store { return openT(t, Config{Driver: Postgres, DSN: dsn}) })
	})
}

// pgServer starts a PostgreSQL for one test (about a second).
func pgServer(t testing.TB) *pgtest.Server { return pgtest.Start(t) }

func openT(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func ev(id, camera, label string, first time.Duration, zones ...string) Event {
	return Event{ID: id, Camera: camera, TrackID: 7, Label: label, ClassID: 1, Zones: zones,
		FirstSeen: t0.Add(first), LastSeen: t0.Add(first + 2*time.Second), BestScore: 0.8, Box: [4]float32{1, 2, 3, 4},
		Width: 640, Height: 480, StageScores: []float32{0.7, 0.75, 0.8}, Worker: "w1"}
}

func ids(evs []Event) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return out
}

func TestStoreEvents(t *testing.T) {
	stores(t, func(t *testing.T, open func() *Store) {
		ctx := context.Background()
		s := open()
		if v, err := s.Version(ctx); err != nil || v != 1 {
			t.Fatalf("schema version %d, %v; want 1", v, err)
		}
		// a track's life: new, update (better score, a zone, a snapshot),
		// update without the snapshot, end
		e := ev("front-1-7", "front", "person", 0)
		if err := s.PutEvents(ctx, e); err != nil {
			t.Fatal(err)
		}
		e.LastSeen, e.BestScore, e.Zones, e.Snapshot, e.SnapshotURL = t0.Add(5*time.Second), 0.9, []string{"porch"}, "/s/a.jpg", "/snapshots/front/a.jpg"
		e.StageScores = []float32{0.8, 0.85, 0.9}
		if err := s.PutEvents(ctx, e); err != nil {
			t.Fatal(err)
		}
		e2 := e
		e2.Snapshot, e2.SnapshotURL, e2.Zones = "", "", []string{"porch", "yard"}
		e2.LastSeen, e2.Ended = t0.Add(9*time.Second), true
		if err := s.PutEvents(ctx, e2); err != nil {
			t.Fatal(err)
		}
		got, err := s.Events(ctx, Query{})
		if err != nil {
			t.Fatal(err)
		}
		want := e2
		want.Snapshot, want.SnapshotURL = e.Snapshot, e.SnapshotURL
		if len(got) != 1 || !equalEvent(got[0], want) {
			t.Fatalf("stored %+v\nwant %+v", got, want)
		}
		// an end is never undone by a late update
		late := e
		if err := s.PutEvents(ctx, late); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Events(ctx, Query{}); !got[0].Ended {
			t.Fatal("an update after the end reopened the event")
		}

		// filters and order
		more := []Event{
			ev("front-2-1", "front", "car", 10*time.Second),
			ev("back-3-1", "back", "person", 20*time.Second, "yard"),
			ev("back-4-2", "back", "person", 30*time.Second),
			ev("front-5-3", "front", "person", 40*time.Second, "porch"),
		}
		if err := s.PutEvents(ctx, more...); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			q    Query
			want []string
		}{
			{Query{}, []string{"front-5-3", "back-4-2", "back-3-1", "front-2-1", "front-1-7"}},
			{Query{Camera: "front"}, []string{"front-5-3", "front-2-1", "front-1-7"}},
			{Query{Label: "person", Camera: "back"}, []string{"back-4-2", "back-3-1"}},
			{Query{Zone: "porch"}, []string{"front-5-3", "front-1-7"}},
			{Query{Zone: "yard"}, []string{"back-3-1", "front-1-7"}},
			{Query{After: t0.Add(20 * time.Second), Before: t0.Add(40 * time.Second)}, []string{"back-4-2", "back-3-1"}},
			{Query{Limit: 2}, []string{"front-5-3", "back-4-2"}},
			{Query{Limit: 2, Before: t0.Add(30 * time.Second)}, []string{"back-3-1", "front-2-1"}},
			{Query{Camera: "side"}, []string{}},
		} {
			got, err := s.Events(ctx, c.q)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), c.want) {
				t.Errorf("%+v: %v, want %v", c.q, ids(got), c.want)
			}
		}

		// the data outlives the process: a second open sees it all and
		// migrates nothing
		s.Close()
		s = open()
		if got, err := s.Events(ctx, Query{}); err != nil || len(got) != 5 {
			t.Fatalf("after reopening: %d events, %v", len(got), err)
		}

		// retention by last seen, zones with their events
		n, _, err := s.Prune(ctx, t0.Add(25*time.Second))
		if err != nil || n != 3 {
			t.Fatalf("pruned %d, %v; want 3", n, err)
		}
		if got, _ := s.Events(ctx, Query{}); !slices.Equal(ids(got), []string{"front-5-3", "back-4-2"}) {
			t.Fatalf("after pruning: %v", ids(got))
		}
		if got, _ := s.Events(ctx, Query{Zone: "yard"}); len(got) != 0 {
			t.Fatalf("a pruned event's zone still matches: %v", ids(got))
		}
		var zones int
		if err := s.db.QueryRow("SELECT COUNT(*) FROM event_zones").Scan(&zones); err != nil || zones != 1 {
			t.Fatalf("%d zone rows left, %v; want front-5-3's one", zones, err)
		}
	})
}

func equalEvent(a, b Event) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestStoreSegments(t *testing.T) {
	stores(t, func(t *testing.T, open func() *Store) {
		ctx := context.Background()
		s := open()
		seg := func(cam string, startMin int) Segment {
			return Segment{Camera: cam, Path: fmt.Sprintf("/rec/%s/%d.mp4", cam, startMin), Worker: "w1",
				Start: t0.Add(time.Duration(startMin) * time.Minute), End: t0.Add(time.Duration(startMin)*time.Minute + 30*time.Second), Bytes: 1000}
		}
		for _, g := range []Segment{seg("front", 0), seg("front", 10), seg("back", 5), seg("front", 20)} {
			if err := s.PutSegment(ctx, g); err != nil {
				t.Fatal(err)
			}
		}
		// the segment being written grows
		g := seg("front", 20)
		g.End, g.Bytes = g.Start.Add(10*time.Minute), 5000
		if err := s.PutSegment(ctx, g); err != nil {
			t.Fatal(err)
		}
		got, err := s.Segments(ctx, SegmentQuery{Camera: "front", After: t0.Add(10*time.Minute + 40*time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Bytes != 5000 || !got[0].End.Equal(g.End) {
			t.Fatalf("%+v", got)
		}
		got, _ = s.Segments(ctx, SegmentQuery{Before: t0.Add(6 * time.Minute)})
		if len(got) != 2 || got[0].Camera != "front" || got[1].Camera != "back" {
			t.Fatalf("%+v", got)
		}
		if _, n, err := s.Prune(ctx, t0.Add(6*time.Minute)); err != nil || n != 2 {
			t.Fatalf("pruned %d segments, %v", n, err)
		}
	})
}

func TestStoreRefuses(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []Config{{Driver: "mysql"}, {Driver: SQLite}, {Driver: Postgres}} {
		if _, err := Open(ctx, cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", cfg, err)
		}
	}
	// a database that is not there: one error, the password not in it
	_, err := Open(ctx, Config{Driver: Postgres, DSN: "postgres://u:s3cret@127.0.0.1:1/db?sslmode=disable&connect_timeout=2"})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("%v", err)
	}
	s := openT(t, Config{Path: filepath.Join(t.TempDir(), "e.db")})
	bad := ev("x", "front", "person", 0)
	bad.BestScore = float32(math.NaN())
	if err := s.PutEvents(ctx, ev("ok", "front", "person", 0), bad); !errors.Is(err, ErrBadEvent) {
		t.Fatalf("%v, want ErrBadEvent", err)
	}
	if got, _ := s.Events(ctx, Query{}); len(got) != 0 {
		t.Fatalf("a refused batch stored %v", ids(got))
	}
}

// TestStoreConcurrentOpen: workers starting at once against one
// PostgreSQL apply the migrations once.
func TestStoreConcurrentOpen(t *testing.T) {
	dsn := pgServer(t).NewDB(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := Open(context.Background(), Config{Driver: Postgres, DSN: dsn})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}
