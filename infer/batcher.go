package infer

import (
	"context"
	"time"
)

// BatcherConfig configures a Batcher.
type BatcherConfig struct {
	// Size is the largest batch; a batch leaves as soon as it is full.
	// Default 1.
	Size int
	// Deadline is the longest the first item of a batch waits for the
	// batch to fill (DeepStream nvstreammux's batched-push-timeout);
	// default 0 = leave at once with whatever is there.
	Deadline time.Duration
}

// Batcher groups items of many streams into batches of items that share a
// key (the prepared frame shape: only same-shaped frames stack into one
// tensor). A batch leaves when it holds Size items or when its first item
// has waited Deadline. Items of one key keep their arrival order.
type Batcher[T any] struct {
	cfg BatcherConfig
	key func(T) string
}

// NewBatcher returns a batcher grouping by key.
func NewBatcher[T any](cfg BatcherConfig, key func(T) string) *Batcher[T] {
	if cfg.Size < 1 {
		cfg.Size = 1
	}
	return &Batcher[T]{cfg: cfg, key: key}
}

type pending[T any] struct {
	items []T
	due   time.Time
}

// Run reads items from in until it is closed or ctx is done, and sends
// batches to out. When in closes, every partial batch is sent (a drain, not
// a drop) and out is closed. Run owns out.
func (b *Batcher[T]) Run(ctx context.Context, in <-chan T, out chan<- []T) error {
	defer close(out)
	open := map[string]*pending[T]{}
	var order []string // keys in the order their batches started
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	send := func(k string) error {
		p := open[k]
		delete(open, k)
		for i, o := range order {
			if o == k {
				order = append(order[:i], order[i+1:]...)
				break
			}
		}
		select {
		case out <- p.items:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	arm := func() {
		timer.Stop()
		if len(order) > 0 {
			timer.Reset(time.Until(open[order[0]].due))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case item, ok := <-in:
			if !ok {
				for len(order) > 0 {
					if err := send(order[0]); err != nil {
						return err
					}
				}
				return nil
			}
			k := b.key(item)
			p := open[k]
			if p == nil {
				p = &pending[T]{due: time.Now().Add(b.cfg.Deadline)}
				open[k] = p
				order = append(order, k)
			}
			p.items = append(p.items, item)
			if len(p.items) >= b.cfg.Size || b.cfg.Deadline <= 0 {
				if err := send(k); err != nil {
					return err
				}
			}
			arm()
		case <-timer.C:
			now := time.Now()
			for len(order) > 0 && !open[order[0]].due.After(now) {
				if err := send(order[0]); err != nil {
					return err
				}
			}
			arm()
		}
	}
}
