package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/FerretDB/FerretDB/ferretdb"
	_ "modernc.org/sqlite" // the SQLite driver FerretDB itself uses

	"intake/embedded/checkpoint"
)

// Embedded is an in-process MongoDB-protocol server (FerretDB v1.24.2, SQLite backend) keeping
// its files in one directory.
type Embedded struct {
	dir    string
	uri    string
	cancel context.CancelFunc
	done   chan struct{}
	// checkpointer copies the SQLite logs into the databases (FerretDB runs without autocheckpoint)
	checkpointer *checkpoint.Checkpointer
}

// StartEmbedded starts FerretDB listening on addr ("127.0.0.1:0" picks a free port).
func StartEmbedded(dir, addr string, log *slog.Logger) (*Embedded, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: addr},
		Handler:  "sqlite",
		// No automatic checkpoint: a Checkpointer does it beside the server (embedded/checkpoint).
		SQLiteURL: "file:" + abs + "/?_pragma=synchronous(normal)&_pragma=wal_autocheckpoint(0)",
		Logger:    slog.New(lazyAttrs{Handler: log.Handler()}),
	})
	if err != nil {
		return nil, fmt.Errorf("start embedded mongodb server: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Embedded{dir: abs, uri: f.MongoDBURI(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(e.done)
		_ = f.Run(ctx)
	}()
	e.checkpointer = checkpoint.Start(log, filepath.Join(abs, "*.sqlite"))
	return e, nil
}

// URI is the mongodb:// address of the server.
func (e *Embedded) URI() string { return e.uri }

// Stop shuts the server down and waits for it.
func (e *Embedded) Stop() {
	e.cancel()
	<-e.done
	e.checkpointer.Stop()
}

// IDIndexName is the SQLite index AddIDIndexes creates on each collection's table.
const IDIndexName = "_intake_id"

// AddIDIndexes works around FerretDB v1.24.2 with SQLite: it pushes `_id` equality down as
// `_ferretdb_sjson->'$._id' = ?`, but indexes _id on another expression, so every lookup scans
// the table. An expression index on exactly that text makes _id lookups O(log n). It depends on
// FerretDB internals (the `_ferretdb_collections` table and the `_ferretdb_sjson` column), which
// is why it lives here, in one place, and is tested. Call it after the collections exist.
func (e *Embedded) AddIDIndexes(ctx context.Context, database string) error {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(e.dir, database+".sqlite")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return fmt.Errorf("open %s sqlite file: %w", database, err)
	}
	defer db.Close()
	tables, err := e.tables(ctx, db)
	if err != nil {
		return err
	}
	for _, t := range tables {
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`, t+IDIndexName, t)
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("index _id of %s: %w", t, err)
		}
	}
	return nil
}

// IDIndexedTables lists the tables of database, in the embedded server's folder dir, that have
// the _id expression index (tests check it is there).
func IDIndexedTables(ctx context.Context, dir, database string) ([]string, error) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, database+".sqlite")+"?mode=ro")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return queryStrings(ctx, db, `SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND name LIKE ?`, "%"+IDIndexName)
}

func (e *Embedded) tables(ctx context.Context, db *sql.DB) ([]string, error) {
	tables, err := queryStrings(ctx, db, `SELECT table_name FROM "_ferretdb_collections"`)
	if err != nil {
		return nil, fmt.Errorf("list ferretdb tables: %w", err)
	}
	return slices.DeleteFunc(tables, func(t string) bool { return strings.HasPrefix(t, "sqlite_") }), nil
}

// queryStrings runs a query whose rows are one text column.
func queryStrings(ctx context.Context, db *sql.DB, q string, args ...any) ([]string, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// lazyAttrs is a handler whose WithAttrs and WithGroup cost nothing until a record is handled.
// FerretDB calls Logger.With(query arguments...) around every SQL statement to log it at debug
// level, and a JSON handler formats those attributes (whole documents) at once, enabled or not:
// about 1 % of the process's CPU under load, for lines nobody sees.
type lazyAttrs struct {
	slog.Handler
	pending []func(slog.Handler) slog.Handler
}

func (h lazyAttrs) WithAttrs(as []slog.Attr) slog.Handler {
	return h.then(func(x slog.Handler) slog.Handler { return x.WithAttrs(as) })
}

func (h lazyAttrs) WithGroup(name string) slog.Handler {
	return h.then(func(x slog.Handler) slog.Handler { return x.WithGroup(name) })
}

func (h lazyAttrs) then(f func(slog.Handler) slog.Handler) slog.Handler {
	return lazyAttrs{Handler: h.Handler, pending: append(slices.Clip(h.pending), f)}
}

func (h lazyAttrs) Handle(ctx context.Context, r slog.Record) error {
	x := h.Handler
	for _, f := range h.pending {
		x = f(x)
	}
	return x.Handle(ctx, r)
}
