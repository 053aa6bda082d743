// Package stream owns what leaves htcstream: WebRTC publishing to browsers
// (pion, WHEP) with the embedded viewer page, the encoders that feed it,
// the web API server in front of them (Server: loopback by default,
// token or basic auth, TLS, CORS allow-list, Host checks, limits), the
// file and detection sinks, and the event side: Event (docs/events.md),
// the MQTT and webhook sinks behind their own bounded queues, and the
// snapshot store.
package stream
