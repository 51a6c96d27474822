package embedded

import (
	"database/sql"
	"fmt"
	"strings"

	_ "modernc.org/sqlite" // the SQLite driver the Temporal server uses
)

// unusedVisibilityIndexes are the indexes of Temporal's SQLite visibility table that no query
// of intake, of its console or of the Temporal UI's workflow lists can use: search attribute
// slots intake never maps (Bool, Datetime, Double, Int), system attributes of features it does
// not run (schedules, batch operations, worker deployments, pauses), and columns nobody sorts
// or filters by. Every index of that table ends with the close time, so every start and every
// close of a workflow writes every one of them: 58 in all, and visibility took ~40 % of the
// embedded stack's CPU under load. Queries that name a dropped column still work, by scan.
var unusedVisibilityIndexes = []string{
	"by_execution_time", "by_history_length", "by_history_size_bytes", "by_execution_duration",
	"by_state_transition_count", "by_task_queue", "by_parent_workflow_id", "by_parent_run_id",
	"by_root_workflow_id", "by_root_run_id", "by_batcher_user", "by_temporal_scheduled_start_time",
	"by_temporal_scheduled_by_id", "by_temporal_schedule_paused", "by_temporal_pause_info",
	"by_temporal_worker_deployment_version", "by_temporal_workflow_versioning_behavior",
	"by_temporal_worker_deployment",
	"by_bool_01", "by_bool_02", "by_bool_03", "by_datetime_01", "by_datetime_02", "by_datetime_03",
	"by_double_01", "by_double_02", "by_double_03", "by_int_01", "by_int_02", "by_int_03",
	"by_temporal_bool_01", "by_temporal_bool_02", "by_temporal_datetime_01", "by_temporal_datetime_02",
	"by_temporal_double_01", "by_temporal_double_02", "by_temporal_int_01", "by_temporal_int_02",
	"by_temporal_keyword_01", "by_temporal_keyword_02", "by_temporal_keyword_03", "by_temporal_keyword_04",
	"by_temporal_low_cardinality_keyword_01",
}

// trimVisibility drops unusedVisibilityIndexes from the SQLite file holding the visibility
// table, before the server opens it (idempotent: a file trimmed before is left as it is).
func trimVisibility(file string) error {
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return fmt.Errorf("open %s: %w", file, err)
	}
	defer db.Close()
	var b strings.Builder
	for _, name := range unusedVisibilityIndexes {
		fmt.Fprintf(&b, "DROP INDEX IF EXISTS %s;\n", name)
	}
	if _, err := db.Exec(b.String()); err != nil {
		return fmt.Errorf("drop unused visibility indexes in %s: %w", file, err)
	}
	return nil
}
