// Package checkpoint copies SQLite write-ahead logs into their databases beside the embedded
// servers that write them.
package checkpoint

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // the SQLite driver both embedded servers use
)

// Every is how often a Checkpointer copies the write-ahead log into the database.
const Every = 500 * time.Millisecond

// Checkpointer copies SQLite write-ahead logs into their databases in the background, so that
// the servers writing them can turn SQLite's automatic checkpoint off (wal_autocheckpoint=0).
// Automatically, the commit that takes the log past 1,000 pages copies them and syncs the file
// before it returns, and that commit is a workflow start or a webhook's delivery record: one
// request in a few hundred waited tens of milliseconds. A PASSIVE checkpoint from another
// connection blocks no writer and no reader; the log is reused once one catches up with it.
type Checkpointer struct {
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

// Start checkpoints, every Every until Stop, each SQLite file matching one
// of the patterns (filepath.Glob: a file a server creates later is found on a later tick).
func Start(log *slog.Logger, patterns ...string) *Checkpointer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Checkpointer{log: log, cancel: cancel, done: make(chan struct{})}
	go c.run(ctx, patterns)
	return c
}

// Stop ends the checkpoints after a last one of each file.
func (c *Checkpointer) Stop() {
	c.cancel()
	<-c.done
}

func (c *Checkpointer) run(ctx context.Context, patterns []string) {
	defer close(c.done)
	dbs := map[string]*sql.DB{}
	failing := map[string]bool{}
	defer func() {
		for _, db := range dbs {
			_ = once(context.Background(), db)
			_ = db.Close()
		}
	}()
	t := time.NewTicker(Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, pattern := range patterns {
			files, _ := filepath.Glob(pattern)
			for _, file := range files {
				db := dbs[file]
				if db == nil {
					var err error
					if db, err = sql.Open("sqlite", "file:"+file+"?mode=rw&_pragma=busy_timeout(5000)"); err != nil {
						c.log.Error("open sqlite file to checkpoint", "file", file, "err", err)
						continue
					}
					db.SetMaxOpenConns(1)
					dbs[file] = db
				}
				err := once(ctx, db)
				switch {
				case err != nil && !failing[file] && ctx.Err() == nil:
					c.log.Warn("sqlite checkpoint failed; retrying", "file", file, "err", err)
					failing[file] = true
				case err == nil && failing[file]:
					c.log.Info("sqlite checkpoint works again", "file", file)
					failing[file] = false
				}
			}
		}
	}
}

// once copies what it can of db's write-ahead log into the database, blocking no one.
func once(ctx context.Context, db *sql.DB) error {
	var busy, logPages, copied int
	if err := db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logPages, &copied); err != nil {
		return fmt.Errorf("wal_checkpoint: %w", err)
	}
	return nil
}
