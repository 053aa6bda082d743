package events

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/stream/record"
)

// published keeps what a worker publishes, in order.
type published struct {
	mu  sync.Mutex
	evs []Event
}

func (p *published) Publish(ev Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.evs = append(p.evs, ev)
	return nil
}

// A job's snapshot is saved before its events go out, which then name the
// file and its URL and carry the mask as RLE; the end of the event still
// names its snapshot, and a queue full of frames drops snapshots, never
// events.
func TestWorkerSnapshotsThenPublishes(t *testing.T) {
	store, err := record.NewSnapshotStore(record.SnapshotStoreConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	pub := &published{}
	var mu sync.Mutex
	counts := map[string]int{}
	w := NewWorker(WorkerConfig{Camera: "gate", Snapshots: store, SnapshotURL: "/snapshots", Publishers: []Publisher{pub},
		CountSnapshots: func(result string, n int) { mu.Lock(); counts[result] += n; mu.Unlock() }})
	newEv := testEvent(t, EventNew, "gate", 7, "car")
	newEv.ID, newEv.Snapshot, newEv.Width, newEv.Height = "gate-1-7", "", 4, 4
	mask := detection.Mask{X: 1, Y: 1, W: 2, H: 2, Bits: []byte{1, 1, 0, 1}}
	w.Push(&Job{Snapshots: []string{newEv.ID}, RGB: make([]byte, 4*4*3), Width: 4, Height: 4,
		Events: []Pending{{Event: newEv, Mask: mask}}})
	endEv := newEv
	endEv.Type = EventEnd
	w.Push(&Job{Events: []Pending{{Event: endEv, Mask: mask}}})
	w.Flush()
	if len(pub.evs) != 2 || pub.evs[0].Type != EventNew || pub.evs[1].Type != EventEnd {
		t.Fatalf("published %+v", pub.evs)
	}
	for _, ev := range pub.evs {
		if _, err := os.Stat(ev.Snapshot); err != nil {
			t.Fatalf("%s names snapshot %q: %v", ev.Type, ev.Snapshot, err)
		}
		if ev.SnapshotURL != "/snapshots/gate/"+filepath.Base(ev.Snapshot) || ev.Mask == nil {
			t.Fatalf("%s: url %q mask %v", ev.Type, ev.SnapshotURL, ev.Mask)
		}
	}
	if counts["saved"] != 1 {
		t.Fatalf("snapshot counts %v", counts)
	}
	w.Close()
	if !w.Closed() {
		t.Fatal("Closed after Close is false")
	}
}
