package encode

// fitRGB letterboxes a w x h packed RGB24 picture into a new W x H one: the
// picture scaled (bilinear) by the largest factor that keeps all of it,
// centred, the rest black. A recording keeps the size of its first frame
// (an mp4 track has one size), so a later picture of another size (an
// image folder of mixed sizes) is fitted into it rather than ending the
// recording; the detections keep the picture's own pixels.
func fitRGB(rgb []byte, w, h, W, H int) []byte {
	out := make([]byte, W*H*3)
	scale := min(float64(W)/float64(w), float64(H)/float64(h))
	sw := max(1, min(W, int(float64(w)*scale+0.5)))
	sh := max(1, min(H, int(float64(h)*scale+0.5)))
	ox, oy := (W-sw)/2, (H-sh)/2
	fx, fy := float64(w)/float64(sw), float64(h)/float64(sh)
	for y := 0; y < sh; y++ {
		// Pixel centres: output pixel y samples source row (y+0.5)*fy-0.5.
		sy := max(0, (float64(y)+0.5)*fy-0.5)
		y0 := min(int(sy), h-1)
		y1 := min(y0+1, h-1)
		wy := sy - float64(y0)
		for x := 0; x < sw; x++ {
			sx := max(0, (float64(x)+0.5)*fx-0.5)
			x0 := min(int(sx), w-1)
			x1 := min(x0+1, w-1)
			wx := sx - float64(x0)
			d := ((oy+y)*W + ox + x) * 3
			for c := 0; c < 3; c++ {
				p00 := float64(rgb[(y0*w+x0)*3+c])
				p01 := float64(rgb[(y0*w+x1)*3+c])
				p10 := float64(rgb[(y1*w+x0)*3+c])
				p11 := float64(rgb[(y1*w+x1)*3+c])
				v := (p00*(1-wx)+p01*wx)*(1-wy) + (p10*(1-wx)+p11*wx)*wy
				out[d+c] = byte(v + 0.5)
			}
		}
	}
	return out
}
