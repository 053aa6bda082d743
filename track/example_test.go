package track_test

import (
	"fmt"
	"time"

	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/track"
)

// One Tracker per stream, fed every frame in order; the Result says which
// id each detection gets and which tracks began, changed and ended.
func ExampleTracker() {
	tr, err := track.NewTracker(track.DefaultSettings())
	if err != nil {
		fmt.Println(err)
		return
	}
	for seq := int64(0); seq < 40; seq++ {
		var dets []detection.Detection
		if seq < 5 { // a circle moving right for five frames, then gone
			x := float32(10 + 4*seq)
			dets = append(dets, detection.Detection{Box: detection.Box{X1: x, Y1: 20, X2: x + 30, Y2: 50}, Score: 0.9, Label: 0, Class: "circle"})
		}
		res := tr.Update(seq, time.Duration(seq)*66*time.Millisecond, dets)
		for _, t := range res.New {
			fmt.Printf("frame %d: new %s #%d, first seen at frame %d\n", seq, t.Label, t.ID, t.FirstSeq)
		}
		for _, t := range res.Ended {
			fmt.Printf("frame %d: end %s #%d, last seen at frame %d, best score %.1f\n", seq, t.Label, t.ID, t.LastSeq, t.BestScore)
		}
	}
	for _, t := range tr.EndAll() { // the stream stopped
		fmt.Printf("end of stream: end #%d\n", t.ID)
	}
	// Output:
	// frame 2: new circle #1, first seen at frame 0
	// frame 35: end circle #1, last seen at frame 4, best score 0.9
}
