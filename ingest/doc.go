// Package ingest owns opening sources by URL: which kind a URL names (file,
// RTSP, camera, HTTP, image folder), the options each kind needs, and —
// for live sources — reconnecting after drops and reporting source state.
package ingest
