package infer

import (
	"context"
	"fmt"
	"testing"
	"time"
)

type item struct {
	stream string
	seq    int
	shape  string
}

func runBatcher(t *testing.T, cfg BatcherConfig, feed func(in chan<- item)) [][]item {
	t.Helper()
	in := make(chan item)
	out := make(chan []item, 100)
	b := NewBatcher(cfg, func(i item) string { return i.shape })
	done := make(chan error, 1)
	go func() { done <- b.Run(context.Background(), in, out) }()
	feed(in)
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var got [][]item
	for batch := range out {
		got = append(got, batch)
	}
	return got
}

func TestBatcherFillsGroupsAndDrains(t *testing.T) {
	got := runBatcher(t, BatcherConfig{Size: 3, Deadline: time.Hour}, func(in chan<- item) {
		for i := 0; i < 4; i++ {
			in <- item{"a", i, "640x480"}
			in <- item{"b", i, "1920x1080"}
		}
	})
	// Full batches leave at once; the remainders leave when input closes.
	want := []string{"a0 a1 a2", "b0 b1 b2", "a3", "b3"}
	if len(got) != len(want) {
		t.Fatalf("got %d batches: %v", len(got), got)
	}
	for i, batch := range got {
		s := ""
		for j, it := range batch {
			if j > 0 {
				s += " "
			}
			s += fmt.Sprintf("%s%d", it.stream, it.seq)
		}
		if s != want[i] {
			t.Errorf("batch %d: %s, want %s", i, s, want[i])
		}
	}
}

func TestBatcherDeadline(t *testing.T) {
	in := make(chan item)
	out := make(chan []item, 10)
	b := NewBatcher(BatcherConfig{Size: 8, Deadline: 30 * time.Millisecond}, func(i item) string { return i.shape })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx, in, out)
	in <- item{"a", 0, "s"}
	in <- item{"a", 1, "s"}
	select {
	case batch := <-out:
		if len(batch) != 2 || batch[0].seq != 0 || batch[1].seq != 1 {
			t.Fatalf("deadline batch %v", batch)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a partial batch did not leave at its deadline")
	}
}

func TestBatcherStopsOnCancel(t *testing.T) {
	in := make(chan item)
	out := make(chan []item) // nobody reads: Run must not hang on send
	b := NewBatcher(BatcherConfig{Size: 1}, func(i item) string { return i.shape })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, in, out) }()
	in <- item{"a", 0, "s"}
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop on cancel")
	}
}
