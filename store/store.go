// Package store keeps events and recording segments in a SQL database:
// SQLite in one file by default, PostgreSQL by a DSN for a fleet of
// workers writing to one store. Both go through database/sql with the same
// queries (docs/event-store.md has the schema and why it looks the way it
// does); migrations are numbered SQL files embedded in the binary.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
)

// Drivers: the values of Config.Driver.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// Config says which database to open.
type Config struct {
	// Driver is SQLite (default) or Postgres.
	Driver string
	// Path is the SQLite file; created with its folder when missing.
	Path string
	// DSN is PostgreSQL's connection string
	// (postgres://user:pass@host:5432/db?sslmode=...).
	DSN string
}

// Store is an open event store. Its methods are safe from several
// goroutines.
type Store struct {
	db     *sql.DB
	driver string
	q      queries
}

// ErrConfig is wrapped by the errors about a Config that cannot work.
var ErrConfig = errors.New("event store config")

// Open opens (creating when needed) the database and brings its schema up
// to date.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	var (
		db  *sql.DB
		err error
	)
	switch cfg.Driver {
	case "", SQLite:
		cfg.Driver = SQLite
		if cfg.Path == "" {
			return nil, fmt.Errorf("%w: sqlite needs a path", ErrConfig)
		}
		if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o755); err != nil {
			return nil, fmt.Errorf("event store: %w", err)
		}
		db, err = sql.Open(sqliteDriver, sqliteDSN(cfg.Path))
		if err == nil {
			// One writer at a time is all SQLite has; WAL lets readers (the
			// API) go on beside it. A few connections are plenty.
			db.SetMaxOpenConns(4)
		}
	case Postgres:
		if cfg.DSN == "" {
			return nil, fmt.Errorf("%w: postgres needs a dsn", ErrConfig)
		}
		db, err = sql.Open("pgx", cfg.DSN)
		if err == nil {
			db.SetMaxOpenConns(8)
			db.SetConnMaxIdleTime(5 * time.Minute)
		}
	default:
		return nil, fmt.Errorf("%w: driver %q: want sqlite or postgres", ErrConfig, cfg.Driver)
	}
	if err != nil {
		return nil, fmt.Errorf("event store: %w", err)
	}
	s := &Store{db: db, driver: cfg.Driver, q: prepare(cfg.Driver)}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("event store (%s): %s", cfg.Driver, redact(err, cfg.DSN))
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("event store (%s): %w", cfg.Driver, err)
	}
	return s, nil
}

// redact removes a DSN's password from an error message.
func redact(err error, dsn string) string {
	msg := err.Error()
	if i := strings.Index(dsn, "://"); i >= 0 {
		if at := strings.LastIndex(dsn, "@"); at > i {
			if c := strings.Index(dsn[i+3:at], ":"); c >= 0 {
				if pw := dsn[i+3+c+1 : at]; pw != "" {
					msg = strings.ReplaceAll(msg, pw, "xxxxx")
				}
			}
		}
	}
	return msg
}

// Driver is SQLite or Postgres.
func (s *Store) Driver() string { return s.driver }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// rebind turns the ? placeholders the queries are written with into
// PostgreSQL's $1, $2... The queries hold no ? in literals.
func rebind(driver, q string) string {
	if driver != Postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }
