-- Events and recording segments. The SQL is what SQLite and PostgreSQL
-- share: times are Unix milliseconds (BIGINT) so that neither driver's time
-- handling matters and comparisons are integer ones; lists are JSON text.
CREATE TABLE events (
    id           TEXT PRIMARY KEY,
    camera       TEXT NOT NULL,
    track_id     BIGINT NOT NULL,
    label        TEXT NOT NULL,
    class_id     INTEGER NOT NULL,
    zones        TEXT NOT NULL,
    first_seen   BIGINT NOT NULL,
    last_seen    BIGINT NOT NULL,
    ended        INTEGER NOT NULL,
    best_score   REAL NOT NULL,
    box          TEXT NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    stage_scores TEXT NOT NULL,
    snapshot     TEXT NOT NULL,
    snapshot_url TEXT NOT NULL,
    clip         TEXT NOT NULL,
    clip_url     TEXT NOT NULL,
    worker       TEXT NOT NULL
);
-- The review page lists newest first, often for one camera or one label.
CREATE INDEX events_first_seen ON events (first_seen);
CREATE INDEX events_camera_first_seen ON events (camera, first_seen);
CREATE INDEX events_label_first_seen ON events (label, first_seen);
-- Retention deletes by last_seen.
CREATE INDEX events_last_seen ON events (last_seen);

-- One row per zone an event entered, so that the zone filter is an index
-- lookup in both databases (neither shares a JSON or array operator).
CREATE TABLE event_zones (
    event_id TEXT NOT NULL,
    zone     TEXT NOT NULL,
    PRIMARY KEY (event_id, zone)
);
CREATE INDEX event_zones_zone ON event_zones (zone, event_id);

CREATE TABLE segments (
    worker   TEXT NOT NULL,
    path     TEXT NOT NULL,
    camera   TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms   BIGINT NOT NULL,
    bytes    BIGINT NOT NULL,
    PRIMARY KEY (worker, path)
);
CREATE INDEX segments_camera_start ON segments (camera, start_ms);
CREATE INDEX segments_end ON segments (end_ms);
