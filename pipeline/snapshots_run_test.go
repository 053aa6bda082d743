package pipeline

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A snapshot exists only for a track that made an event: with min_duration,
// tracks that die sooner had a best frame but leave no file (issue 21:
// 38 files for 30 events before).
func TestSnapshotsOnlyForTracksWithEvents(t *testing.T) {
	dir := t.TempDir()
	hook := newHookEvents(t)
	cfg := DefaultRunConfig()
	cfg.Model.Bundle = "../" + DefaultBundleDir
	cfg.Sources = []string{sampleVideo}
	cfg.Events.Enabled = true
	cfg.Events.MinDuration = 1500 * time.Millisecond
	cfg.Events.Snapshots.Dir = filepath.Join(dir, "snaps")
	cfg.Webhooks = []WebhookConfig{{URL: hook.srv.URL}}
	if err := Execute(cfg, Options{}); err != nil {
		t.Fatal(err)
	}
	var files []string
	filepath.Walk(cfg.Events.Snapshots.Dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasSuffix(p, ".jpg") {
			files = append(files, p)
		}
		return nil
	})
	ids := map[string]string{} // event id -> snapshot path
	for _, ev := range hook.all() {
		if ev.Snapshot != "" || ids[ev.ID] == "" {
			ids[ev.ID] = ev.Snapshot
		}
	}
	named := map[string]bool{}
	for id, p := range ids {
		if p == "" {
			t.Errorf("event %s has no snapshot", id)
		}
		named[p] = true
	}
	for _, f := range files {
		if !named[f] {
			t.Errorf("snapshot %s belongs to no event", f)
		}
	}
	if len(ids) == 0 || len(files) != len(ids) {
		t.Fatalf("%d snapshot files for %d events", len(files), len(ids))
	}
	t.Logf("%d events, %d snapshots", len(ids), len(files))
}
