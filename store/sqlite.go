package store

import (
	"net/url"

	_ "modernc.org/sqlite" // registers "sqlite"
)

// sqliteDriver is modernc.org/sqlite, pure Go: see docs/event-store.md for
// why it and not mattn/go-sqlite3.
const sqliteDriver = "sqlite"

// sqliteDSN opens path in WAL mode (the API reads while the event output
// writes), waits up to 5 s for a lock instead of failing at once, and
// begins every transaction immediate, so that two writers queue on the
// lock instead of one of them failing mid-transaction.
func sqliteDSN(path string) string {
	v := url.Values{}
	v.Add("_pragma", "busy_timeout(5000)")
	v.Add("_pragma", "journal_mode(WAL)")
	v.Add("_pragma", "synchronous(NORMAL)")
	v.Set("_txlock", "immediate")
	return "file:" + path + "?" + v.Encode()
}
