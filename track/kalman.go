package track

// The motion model is ByteTrack's constant-velocity Kalman filter, not a
// plain "last displacement" predictor: detections jitter by a few pixels
// and a raw displacement would carry that jitter into every prediction,
// which at low frame rates and during occlusions sends the predicted box off
// the object. The filter weighs each measurement against the prediction and
// lets the velocity settle over a few frames.
//
// ByteTrack's 8-state filter has block-diagonal transition and observation
// matrices and diagonal noise, so it is exactly four independent filters of
// (position, velocity), one per box coordinate; this file runs those, with
// 2x2 covariances in closed form instead of 8x8 matrix algebra. The state is
// (cx, cy, w, h) rather than ByteTrack's (cx, cy, aspect, h) so that width
// and height both get noise in proportion to themselves (as BoT-SORT does):
// the shapes here are not all upright people.

const (
	// Noise as a fraction of the object's size, per frame: ByteTrack's
	// std_weight_position and std_weight_velocity.
	stdPos = 1.0 / 20
	stdVel = 1.0 / 160
)

// axis is the filter of one box coordinate.
type axis struct {
	x, v          float64 // position and velocity (per nominal frame)
	p00, p01, p11 float64 // covariance
}

func newAxis(z, scale float64) axis {
	sp, sv := 2*stdPos*scale, 10*stdVel*scale
	return axis{x: z, p00: sp * sp, p11: sv * sv}
}

// predict moves the state dt nominal frames ahead. Process noise grows with
// dt, so a gap of dropped frames widens the uncertainty as that many frames
// would.
func (a *axis) predict(dt, scale float64) {
	qp, qv := stdPos*scale, stdVel*scale
	a.x += a.v * dt
	a.p00 += 2*dt*a.p01 + dt*dt*a.p11 + dt*qp*qp
	a.p01 += dt * a.p11
	a.p11 += dt * qv * qv
}

// update folds in a measured position z.
func (a *axis) update(z, scale float64) {
	r := stdPos * scale
	s := a.p00 + r*r
	k0, k1 := a.p00/s, a.p01/s
	y := z - a.x
	a.x += k0 * y
	a.v += k1 * y
	p00, p01, p11 := a.p00, a.p01, a.p11
	a.p00 = (1 - k0) * p00
	a.p01 = (1 - k0) * p01
	a.p11 = p11 - k1*p01
}

// kalman is a box's filter: centre x, centre y, width, height.
type kalman struct{ cx, cy, w, h axis }

func newKalman(b [4]float32) kalman {
	cx, cy, w, h := centre(b)
	return kalman{newAxis(cx, w), newAxis(cy, h), newAxis(w, w), newAxis(h, h)}
}

// predict advances dt nominal frames. frozenSize stops the size from
// drifting while the track is not seen (ByteTrack zeroes the height
// velocity of lost tracks for the same reason: a shrinking prediction soon
// overlaps nothing).
func (k *kalman) predict(dt float64, frozenSize bool) {
	if frozenSize {
		k.w.v, k.h.v = 0, 0
	}
	w, h := k.w.x, k.h.x
	k.cx.predict(dt, w)
	k.cy.predict(dt, h)
	k.w.predict(dt, w)
	k.h.predict(dt, h)
	if k.w.x < 1 {
		k.w.x = 1
	}
	if k.h.x < 1 {
		k.h.x = 1
	}
}

func (k *kalman) update(b [4]float32) {
	cx, cy, w, h := centre(b)
	sw, sh := k.w.x, k.h.x
	k.cx.update(cx, sw)
	k.cy.update(cy, sh)
	k.w.update(w, sw)
	k.h.update(h, sh)
}

// box is the filter's current box, x1 y1 x2 y2.
func (k *kalman) box() [4]float32 {
	hw, hh := k.w.x/2, k.h.x/2
	return [4]float32{float32(k.cx.x - hw), float32(k.cy.x - hh), float32(k.cx.x + hw), float32(k.cy.x + hh)}
}

func centre(b [4]float32) (cx, cy, w, h float64) {
	x1, y1, x2, y2 := float64(b[0]), float64(b[1]), float64(b[2]), float64(b[3])
	return (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
}
