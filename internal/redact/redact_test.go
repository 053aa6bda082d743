package redact

import (
	"strings"
	"testing"
)

func TestURLAndText(t *testing.T) {
	for in, want := range map[string]string{
		"rtsp://user:secret@10.0.0.1:554/cam": "rtsp://user:xxxxx@10.0.0.1:554/cam",
		"rtsp://user@host/cam":                "rtsp://user@host/cam",
		"/data/clip.mp4":                      "/data/clip.mp4",
		"http://a:b@host/x?y=1":               "http://a:xxxxx@host/x?y=1",
		"rtsp://us er:sec ret@host/%zz":       "rtsp://xxxxx@host/%zz",
		"rtsp://user:pa/ss@host/x":            "rtsp://xxxxx@host/x",
		// Secrets in the query, whatever the case or prefix; other
		// parameters and look-alike names stay.
		"rtsp://host/cam?token=abc&channel=1":                      "rtsp://host/cam?token=xxxxx&channel=1",
		"rtsp://u:p@host/cam?Password=abc":                         "rtsp://u:xxxxx@host/cam?Password=xxxxx",
		"https://h/live.m3u8?X-Amz-Signature=f00&X-Amz-Date=1":     "https://h/live.m3u8?X-Amz-Signature=xxxxx&X-Amz-Date=1",
		"http://h/s?access_token=a.b.c&api_key=k1&key=k2&keyint=5": "http://h/s?access_token=xxxxx&api_key=xxxxx&key=xxxxx&keyint=5",
		"http://h/s?pwd=1;auth=2#frag":                             "http://h/s?pwd=xxxxx;auth=xxxxx#frag",
		"http://h/s?monkey=1&stoken=2":                             "http://h/s?monkey=1&stoken=2",
		"/data/clip.mp4?token=not-a-url":                           "/data/clip.mp4?token=not-a-url",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Text("Opening 'http://me:hunter2@cam.local/x' for reading"); strings.Contains(got, "hunter2") {
		t.Errorf("log line keeps the password: %s", got)
	}
	if got := Text("Opening 'http://cam.local/x?token=hunter3' for reading"); got != "Opening 'http://cam.local/x?token=xxxxx' for reading" {
		t.Errorf("log line with a query token: %s", got)
	}
}
