// Package events is what the tracker's tracks become for the outside
// world: Event (new, update, end; docs/events.md is its contract) and its
// outputs, MQTT (with Home Assistant discovery) and webhooks, each behind
// its own bounded queue so that a slow broker or receiver never holds up
// a stream.
package events
