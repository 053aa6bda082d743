package ingest

import (
	"testing"

	"github.com/htcstream/htcstream/internal/rtsptest"
)

// The RTSP server these tests play clips from is internal/rtsptest's (the
// pipeline's tests use it too).

func makeH264Clip(t *testing.T, w, h, fps, frames int) *rtsptest.Clip {
	t.Helper()
	return rtsptest.MakeClip(t, w, h, fps, frames)
}

func makeH264ClipGOP(t *testing.T, w, h, fps, frames, gop int) *rtsptest.Clip {
	t.Helper()
	return rtsptest.MakeClipGOP(t, w, h, fps, frames, gop)
}

func startRTSPServer(t *testing.T, clip *rtsptest.Clip, fps int, user, pass string) *rtsptest.Server {
	t.Helper()
	return rtsptest.StartServer(t, clip, fps, user, pass)
}
