package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/htcstream/htcstream/internal/mqtttest"
	"github.com/htcstream/htcstream/internal/pgtest"
	"github.com/htcstream/htcstream/store"
)

// Two workers, each with its own camera, write their events to one
// PostgreSQL (and publish them to one broker); the API of either lists
// both workers' events, refuses a request without its token, and after
// both stop every stored event has ended.
func TestRunTwoWorkersOneStore(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.NewDB(t)
	broker := mqtttest.StartBroker(t, "")
	sample, err := os.ReadFile(sampleVideo)
	if err != nil {
		t.Fatal(err)
	}

	type worker struct {
		camera, token, api string
		out                *lineWriter
		stop               chan os.Signal
		done               chan error
	}
	workers := []*worker{{camera: "front", token: "tok-front"}, {camera: "back", token: "tok-back"}}
	for _, w := range workers {
		cfg, dir := eventsRun(t, broker.URL())
		src := filepath.Join(dir, w.camera+".mp4")
		if err := os.WriteFile(src, sample, 0o644); err != nil {
			t.Fatal(err)
		}
		cfg.Sources, cfg.Loop = []string{src}, true
		cfg.Outputs.Detections = ""
		cfg.Outputs.Serve = "127.0.0.1:0"
		cfg.Server.Token = w.token
		cfg.MQTT.ClientID = "worker-" + w.camera
		cfg.Events.Store = StoreConfig{Driver: "postgres", DSN: dsn, RetainDays: 30, Queue: 1000}
		w.out = &lineWriter{lines: make(chan string, 16)}
		w.stop, w.done = make(chan os.Signal, 2), make(chan error, 1)
		go func() { w.done <- Execute(cfg, Options{Stdout: w.out, Interrupt: w.stop}) }()
		t.Cleanup(func() {
			select {
			case w.stop <- os.Interrupt:
			default:
			}
			<-w.done
		})
	}
	for _, w := range workers {
		select {
		case l := <-w.out.lines:
			if !strings.HasPrefix(l, "preview: ") {
				t.Fatalf("%s: first line %q", w.camera, l)
			}
			w.api = strings.Fields(strings.TrimPrefix(l, "preview: "))[0] + "api/events"
		case err := <-w.done:
			t.Fatalf("%s: run ended at once: %v\n%s", w.camera, err, w.out)
		}
	}

	get := func(url, token string) (int, []byte) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	list := func(w *worker, query string) []store.Event {
		code, b := get(w.api+query, w.token)
		if code != http.StatusOK {
			t.Fatalf("%s: /api/events%s: %d %s", w.camera, query, code, b)
		}
		var page struct{ Events []store.Event }
		if err := json.Unmarshal(b, &page); err != nil {
			t.Fatalf("%s: %s: %v", w.camera, b, err)
		}
		return page.Events
	}

	// Each API lists the other worker's camera as soon as that worker has
	// stored an event: poll both until each shows both.
	deadline := time.Now().Add(3 * time.Minute)
	for _, w := range workers {
		for {
			cams := map[string]string{}
			for _, e := range list(w, "?limit=200") {
				cams[e.Camera] = e.Worker
			}
			if cams["front"] == "worker-front" && cams["back"] == "worker-back" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's API lists %v; want both workers' cameras\n%s", w.camera, cams, w.out)
			}
			time.Sleep(200 * time.Millisecond)
		}
		// the filters reach across workers too
		for _, e := range list(workers[0], "?camera="+w.camera) {
			if e.Camera != w.camera {
				t.Errorf("?camera=%s listed %s", w.camera, e.Camera)
			}
		}
	}
	for _, w := range workers {
		if code, b := get(w.api, ""); code != http.StatusUnauthorized {
			t.Errorf("%s: /api/events without the token: %d %s", w.camera, code, b)
		}
		if code, _ := get(w.api, "tok-wrong"); code != http.StatusUnauthorized {
			t.Errorf("%s: /api/events with a wrong token: %d", w.camera, code)
		}
		rec := strings.TrimSuffix(w.api, "events") + "recordings?camera=front"
		if code, b := get(rec, w.token); code != http.StatusOK || !strings.Contains(string(b), `"segments":[]`) {
			t.Errorf("%s: /api/recordings: %d %s", w.camera, code, b)
		}
	}

	for _, w := range workers {
		w.stop <- os.Interrupt
	}
	for _, w := range workers {
		if err := <-w.done; err != nil && !errors.Is(err, ErrInterrupted) {
			t.Fatalf("%s: run: %v\n%s", w.camera, err, w.out)
		}
		w.done <- nil // for the cleanup
		if !strings.Contains(w.out.String(), "event store (postgres): ") || !strings.Contains(w.out.String(), " 0 dropped, 0 errors") {
			t.Errorf("%s: summary:\n%s", w.camera, w.out)
		}
	}
	// Every track's end reached the store before the workers stopped.
	db, err := store.Open(context.Background(), store.Config{Driver: store.Postgres, DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	evs, err := db.Events(context.Background(), store.Query{Limit: store.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for _, e := range evs {
		per[e.Camera]++
		if !e.Ended || e.Snapshot == "" || len(e.StageScores) == 0 || e.Width != 320 {
			t.Errorf("event %s: ended %v, snapshot %q, stage scores %v, width %d", e.ID, e.Ended, e.Snapshot, e.StageScores, e.Width)
		}
	}
	if per["front"] == 0 || per["back"] == 0 {
		t.Errorf("events per camera %v", per)
	}
	t.Logf("%d events in the store: %v", len(evs), per)
}

// A recording camera with a store: each closed segment is listed by
// /api/recordings (its file on disk, its size), and an ended event in
// /api/events carries its clip_url.
func TestRunListsRecordingsInTheStore(t *testing.T) {
	src := liveHTTP(t)
	dir := t.TempDir()
	cfg := DefaultRunConfig()
	cfg.Model.Bundle = "../" + DefaultBundleDir
	cfg.Cameras = map[string]CameraConfig{}
	cam := cfg.cameraDefaults()
	cam.URL = src
	cam.Record.Enabled = true
	cam.Record.Dir = filepath.Join(dir, "rec")
	cam.Record.Segment = 2 * time.Second
	cam.Events = cfg.Events.EventRules
	cam.Events.Enabled = true
	cam.Events.Tracker.MaxMisses = 5
	cfg.Cameras["yard"] = cam
	cfg.Events.Enabled = true
	cfg.Events.Store = StoreConfig{Driver: "sqlite", Path: filepath.Join(dir, "events.db"), RetainDays: 30, Queue: 1000}
	cfg.Outputs.Serve = "127.0.0.1:0"
	const token = "store-rec-token-0123456789"
	cfg.Server.Token = token

	out := &lineWriter{lines: make(chan string, 16)}
	stop := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- Execute(cfg, Options{Stdout: out, Interrupt: stop}) }()
	t.Cleanup(func() {
		select {
		case stop <- os.Interrupt:
		default:
		}
		<-done
	})
	var base string
	select {
	case l := <-out.lines:
		base = strings.Fields(strings.TrimPrefix(l, "preview: "))[0]
	case err := <-done:
		t.Fatalf("run ended at once: %v", err)
	}
	get := func(path string, into any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s %s", path, resp.Status, b)
		}
		if err := json.Unmarshal(b, into); err != nil {
			t.Fatalf("%s: %s: %v", path, b, err)
		}
	}
	deadline := time.Now().Add(90 * time.Second)
	var segs struct{ Segments []store.Segment }
	var clipped *store.Event
	for len(segs.Segments) < 2 || clipped == nil {
		if time.Now().After(deadline) {
			t.Fatalf("in 90 s: %d segments listed, an ended event with a clip: %v\n%s", len(segs.Segments), clipped != nil, out)
		}
		time.Sleep(300 * time.Millisecond)
		get("api/recordings?camera=yard", &segs)
		var evs struct{ Events []store.Event }
		get("api/events?camera=yard", &evs)
		for _, e := range evs.Events {
			if e.Ended && e.ClipURL != "" {
				clipped = &e
			}
		}
	}
	// Every segment is listed from its start: the closed ones with their
	// size on disk, the one being written (the newest) as far as it had
	// got when last reported.
	for i, g := range segs.Segments {
		st, err := os.Stat(g.Path)
		growing := i == len(segs.Segments)-1
		if err != nil || g.Camera != "yard" || (!growing && (st.Size() != g.Bytes || !g.End.After(g.Start))) ||
			(growing && (st.Size() < g.Bytes || g.End.Before(g.Start))) {
			t.Errorf("segment %+v: on disk %v", g, err)
		}
	}
	if want := "/clips/yard/" + clipped.ID + ".mp4"; clipped.ClipURL != want {
		t.Errorf("clip_url %q, want %q", clipped.ClipURL, want)
	}
}
