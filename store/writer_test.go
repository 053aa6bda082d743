package store

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The writer stores what is put, a track's events folding into one row,
// and Close writes what is still queued.
func TestWriterWrites(t *testing.T) {
	s := openT(t, Config{Path: filepath.Join(t.TempDir(), "e.db")})
	w, err := NewWriter(WriterConfig{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		e := ev(fmt.Sprintf("t%d", i/3), "front", "person", time.Duration(i/3)*time.Second)
		e.Ended = i%3 == 2
		if err := w.Put(e); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	if err := w.Put(ev("late", "front", "person", 0)); err != ErrClosed {
		t.Fatalf("Put after Close: %v", err)
	}
	st := w.Stats()
	if st.Written != 30 || st.Dropped != 0 || st.Errors != 0 || st.Queued != 0 {
		t.Fatalf("%+v", st)
	}
	got, err := s.Events(context.Background(), Query{})
	if err != nil || len(got) != 10 {
		t.Fatalf("%d events, %v", len(got), err)
	}
	for _, e := range got {
		if !e.Ended {
			t.Errorf("%s did not end", e.ID)
		}
	}
}

// With the database gone, Put still returns at once, the queue keeps the
// newest events within its bound and counts the rest, the failure is
// counted (and retried), and Close gives up after FlushTimeout.
func TestWriterNeverBlocks(t *testing.T) {
	s := openT(t, Config{Path: filepath.Join(t.TempDir(), "e.db")})
	s.Close() // every write fails from now on
	w, err := NewWriter(WriterConfig{Store: s, Queue: 5, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		FlushTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := w.Put(ev(fmt.Sprintf("t%d", i), "front", "person", 0)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for w.Stats().Errors < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no retried failure: %+v", w.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	st := w.Stats()
	if st.Written != 0 || st.Dropped < 45 || st.Queued > 5 || !strings.Contains(st.LastError, "closed") {
		t.Fatalf("%+v", st)
	}
	start := time.Now()
	w.Close()
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Close took %v with FlushTimeout 200ms", el)
	}
	if st := w.Stats(); st.Dropped != 50 || st.Queued != 0 {
		t.Fatalf("after Close: %+v, want all 50 dropped", st)
	}
}

// Retention runs at the writer's start: an event last seen before
// RetainDays goes, a recent one stays.
func TestWriterRetention(t *testing.T) {
	s := openT(t, Config{Path: filepath.Join(t.TempDir(), "e.db")})
	ctx := context.Background()
	if err := s.PutEvents(ctx, ev("old", "front", "person", 0), ev("new", "front", "person", 10*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(12 * 24 * time.Hour)
	w, err := NewWriter(WriterConfig{Store: s, RetainDays: 7, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for w.Stats().Pruned == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	w.Close()
	got, _ := s.Events(ctx, Query{})
	if len(got) != 1 || got[0].ID != "new" || w.Stats().Pruned != 1 {
		t.Fatalf("%v, pruned %d", ids(got), w.Stats().Pruned)
	}
}

// The API's parameters: filters, times as RFC 3339 or Unix seconds, a bad
// value is one 400 line, only GET.
func TestHandler(t *testing.T) {
	s := openT(t, Config{Path: filepath.Join(t.TempDir(), "e.db")})
	ctx := context.Background()
	if err := s.PutEvents(ctx, ev("a", "front", "person", 0, "porch"), ev("b", "back", "car", time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSegment(ctx, Segment{Camera: "front", Path: "/r/1.mp4", Start: t0, End: t0.Add(time.Minute), Bytes: 9}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(s, nil))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		path string
		code int
		want []string
	}{
		{"/api/events", 200, []string{"b", "a"}},
		{"/api/events?zone=porch", 200, []string{"a"}},
		{"/api/events?label=car&camera=back", 200, []string{"b"}},
		{fmt.Sprintf("/api/events?after=%d", t0.Add(30*time.Second).Unix()), 200, []string{"b"}},
		{"/api/events?before=" + t0.Add(30*time.Second).Format(time.RFC3339), 200, []string{"a"}},
		{"/api/events?limit=1", 200, []string{"b"}},
		{"/api/events?limit=0", 400, nil},
		{"/api/events?after=yesterday", 400, nil},
	} {
		code, body := get(c.path)
		if code != c.code {
			t.Errorf("%s: %d %s", c.path, code, body)
			continue
		}
		if code != 200 {
			if strings.Count(strings.TrimSpace(body), "\n") != 0 {
				t.Errorf("%s: error %q is not one line", c.path, body)
			}
			continue
		}
		var page struct{ Events []Event }
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if got := ids(page.Events); strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("%s: %v, want %v", c.path, got, c.want)
		}
	}
	code, body := get("/api/events?camera=front")
	for _, field := range []string{`"first_seen":"2026-05-01T12:00:00.000Z"`, `"duration_s":2`, `"entered_zones":["porch"]`,
		`"stage_scores":[0.7,0.75,0.8]`, `"best_box":[1,2,3,4]`, `"ended":false`} {
		if code != 200 || !strings.Contains(body, field) {
			t.Errorf("%s lacks %s", body, field)
		}
	}
	code, body = get("/api/recordings?camera=front&after=2026-05-01T11:00:00Z")
	if code != 200 || !strings.Contains(body, `"start":"2026-05-01T12:00:00.000Z"`) || !strings.Contains(body, `"bytes":9`) {
		t.Errorf("recordings: %d %s", code, body)
	}
	resp, err := http.Post(srv.URL+"/api/events", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}

// Segments go through the writer as events do: queued, written in order,
// a growing segment's later call updating its row.
func TestWriterSegments(t *testing.T) {
	s := openT(t, Config{Path: filepath.Join(t.TempDir(), "e.db")})
	w, err := NewWriter(WriterConfig{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	g := Segment{Camera: "front", Path: "/rec/front/a.mp4", Start: t0, End: t0.Add(time.Minute), Bytes: 100, Worker: "w1"}
	for i := range 3 {
		g.End, g.Bytes = t0.Add(time.Duration(i+1)*time.Minute), int64(100*(i+1))
		if err := w.PutSegment(g); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.PutSegment(Segment{Camera: "front"}); err == nil {
		t.Fatal("a segment without a path was taken")
	}
	w.Close()
	got, err := s.Segments(context.Background(), SegmentQuery{Camera: "front"})
	if err != nil || len(got) != 1 || got[0].Bytes != 300 || !got[0].End.Equal(t0.Add(3*time.Minute)) {
		t.Fatalf("%+v, %v", got, err)
	}
	if st := w.Stats(); st.Queued != 0 || st.Errors != 0 {
		t.Fatalf("%+v", st)
	}
}
