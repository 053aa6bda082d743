package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// benchEvents is the store's size in the page benchmarks: the issue's
// 100 000 events.
const benchEvents = 100_000

var (
	benchCameras = []string{"front", "back", "drive", "garden"}
	benchLabels  = []string{"person", "car", "dog"}
	benchZones   = []string{"porch", "yard", "street"}
)

// fill stores n events spread over 4 cameras and 3 labels, one every 10 s,
// a third of them in a zone, in batches of 1000 (one transaction each) and
// reports the insert rate.
func fill(b *testing.B, s *Store, n int) {
	ctx := context.Background()
	start := time.Now()
	batch := make([]Event, 0, 1000)
	for i := range n {
		e := ev(fmt.Sprintf("e%07d", i), benchCameras[i%4], benchLabels[(i/4)%3], time.Duration(i)*10*time.Second)
		if i%3 == 0 {
			e.Zones = []string{benchZones[(i/3)%3]}
		}
		e.Ended = true
		batch = append(batch, e)
		if len(batch) == cap(batch) || i == n-1 {
			if err := s.PutEvents(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	b.Logf("%s: %d events stored in %v (%.0f events/s in batches of 1000)", s.driver, n, time.Since(start).Round(time.Millisecond),
		float64(n)/time.Since(start).Seconds())
}

// BenchmarkEventsPage is a page of 50 from 100 000 events, as the review
// page asks for it: newest first, unfiltered, by camera, by camera and
// label, by zone, and a page deep in the past (before=).
func BenchmarkEventsPage(b *testing.B) {
	for _, drv := range []string{SQLite, Postgres} {
		b.Run(drv, func(b *testing.B) {
			var cfg Config
			if drv == SQLite {
				cfg = Config{Driver: SQLite, Path: filepath.Join(b.TempDir(), "events.db")}
			} else {
				cfg = Config{Driver: Postgres, DSN: pgServer(b).NewDB(b)}
			}
			s, err := Open(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			fill(b, s, benchEvents)
			if drv == Postgres {
				// what autovacuum does in service soon after a bulk load
				if _, err := s.db.Exec("ANALYZE"); err != nil {
					b.Fatal(err)
				}
			}
			mid := t0.Add(benchEvents / 2 * 10 * time.Second)
			for _, c := range []struct {
				name string
				q    Query
			}{
				{"newest", Query{Limit: 50}},
				{"camera", Query{Camera: "drive", Limit: 50}},
				{"camera_label", Query{Camera: "drive", Label: "dog", Limit: 50}},
				{"zone", Query{Zone: "yard", Limit: 50}},
				{"camera_before", Query{Camera: "front", Before: mid, Limit: 50}},
				{"label_window", Query{Label: "car", After: mid.Add(-time.Hour), Before: mid, Limit: 50}},
			} {
				b.Run(c.name, func(b *testing.B) {
					ctx := context.Background()
					for b.Loop() {
						got, err := s.Events(ctx, c.q)
						if err != nil {
							b.Fatal(err)
						}
						if len(got) != 50 {
							b.Fatalf("%d events, want a page of 50", len(got))
						}
					}
				})
			}
		})
	}
}

// BenchmarkPutEvent is one event's upsert in a transaction of its own,
// the event output's case when events come one at a time.
func BenchmarkPutEvent(b *testing.B) {
	for _, drv := range []string{SQLite, Postgres} {
		b.Run(drv, func(b *testing.B) {
			var cfg Config
			if drv == SQLite {
				cfg = Config{Driver: SQLite, Path: filepath.Join(b.TempDir(), "events.db")}
			} else {
				cfg = Config{Driver: Postgres, DSN: pgServer(b).NewDB(b)}
			}
			s, err := Open(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			i := 0
			for b.Loop() {
				e := ev(fmt.Sprintf("e%d", i/3), "front", "person", time.Duration(i/3)*time.Second, "porch")
				e.Ended = i%3 == 2
				if err := s.PutEvents(ctx, e); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
