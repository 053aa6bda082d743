// Package web is the browser side of htcstream: the WebRTC hub that
// encodes each stream only while someone watches and sends it over WHEP
// (RFC 9725) with a data channel of detections, the embedded viewer page,
// and the HTTP Server in front of them (loopback by default, token or
// basic auth, TLS, CORS allow-list, Host checks, connection limits,
// /streams, /healthz, /metrics, the live picture's and the events'
// snapshots). docs/web-api.md is its contract.
package web
