package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Handler serves the store's part of the web API (docs/web-api.md):
//
//	GET /api/events?camera=&label=&zone=&after=&before=&limit=
//	GET /api/recordings?camera=&after=&before=&limit=
//
// Times are RFC 3339 or Unix seconds. The server in front of it checks the
// credentials.
func Handler(s *Store, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/events", func(w http.ResponseWriter, r *http.Request) {
		if !getOnly(w, r) {
			return
		}
		v := r.URL.Query()
		q := Query{Camera: v.Get("camera"), Label: v.Get("label"), Zone: v.Get("zone")}
		var err error
		if q.After, q.Before, q.Limit, err = window(v); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		evs, err := s.Events(ctx, q)
		answer(w, log, struct {
			Events []Event `json:"events"`
		}{evs}, err)
	})
	mux.HandleFunc("/api/recordings", func(w http.ResponseWriter, r *http.Request) {
		if !getOnly(w, r) {
			return
		}
		v := r.URL.Query()
		q := SegmentQuery{Camera: v.Get("camera")}
		var err error
		if q.After, q.Before, q.Limit, err = window(v); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		segs, err := s.Segments(ctx, q)
		answer(w, log, struct {
			Segments []Segment `json:"segments"`
		}{segs}, err)
	})
	return mux
}

func getOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

// window reads after, before and limit.
func window(v url.Values) (after, before time.Time, limit int, err error) {
	if after, err = parseTime("after", v.Get("after")); err != nil {
		return
	}
	if before, err = parseTime("before", v.Get("before")); err != nil {
		return
	}
	if s := v.Get("limit"); s != "" {
		limit, err = strconv.Atoi(s)
		if err != nil || limit < 1 {
			err = fmt.Errorf("limit %q: want a positive number (at most %d)", s, MaxLimit)
			return
		}
	}
	return
}

func parseTime(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return time.UnixMilli(int64(f * 1000)), nil
	}
	return time.Time{}, fmt.Errorf("%s %q: want RFC 3339 (2024-05-01T12:00:00Z) or Unix seconds", name, s)
}

func answer(w http.ResponseWriter, log *slog.Logger, body any, err error) {
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, context.DeadlineExceeded) {
			code = http.StatusServiceUnavailable
		}
		log.Warn("event store query failed", "err", err)
		http.Error(w, "event store: the query failed (see the server's log)", code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(body)
}
