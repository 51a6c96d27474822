package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"intake"
	"intake/store"
)

// One embedded MongoDB-protocol server for the package's tests.
func open(t *testing.T) (*store.Store, *store.Embedded, string) {
	t.Helper()
	dir := t.TempDir()
	emb, err := store.StartEmbedded(dir, "127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	t.Cleanup(emb.Stop)
	ctx := context.Background()
	s, err := store.Open(ctx, emb.URI(), "intake", store.SecretKey("test-key"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	require.NoError(t, emb.AddIDIndexes(ctx, "intake"))
	return s, emb, dir
}

func TestStoreAgainstEmbeddedServer(t *testing.T) {
	s, emb, dir := open(t)
	ctx := context.Background()

	t.Run("_id expression index exists on every collection", func(t *testing.T) {
		tables, err := store.IDIndexedTables(ctx, dir, "intake")
		require.NoError(t, err)
		assert.Len(t, tables, len(store.Collections))
	})

	t.Run("opening again on existing collections and indexes works", func(t *testing.T) {
		s2, err := store.Open(ctx, emb.URI(), "intake", store.SecretKey("test-key"))
		require.NoError(t, err)
		require.NoError(t, s2.Close(ctx))
	})

	t.Run("the embedded server keeps no secondary index, and opening drops older ones", func(t *testing.T) {
		cl, err := mongo.Connect(options.Client().ApplyURI(emb.URI()))
		require.NoError(t, err)
		defer cl.Disconnect(ctx)
		names := func(col string) []string {
			specs, err := cl.Database("intake").Collection(col).Indexes().ListSpecifications(ctx)
			require.NoError(t, err)
			var out []string
			for _, sp := range specs {
				out = append(out, sp.Name)
			}
			return out
		}
		assert.Equal(t, []string{"_id_"}, names("deliveries"))
		assert.Equal(t, []string{"_id_"}, names("audit_logs"))
		// An earlier version created them; every write recomputed them for no query's benefit.
		_, err = cl.Database("intake").Collection("deliveries").Indexes().CreateOne(ctx,
			mongo.IndexModel{Keys: bson.D{{Key: "status", Value: 1}}, Options: options.Index().SetName("status_1")})
		require.NoError(t, err)
		require.Contains(t, names("deliveries"), "status_1")
		s2, err := store.Open(ctx, emb.URI(), "intake", store.SecretKey("test-key"))
		require.NoError(t, err)
		require.NoError(t, s2.Close(ctx))
		assert.Equal(t, []string{"_id_"}, names("deliveries"))
	})

	t.Run("a replaced entity loses the fields it no longer has", func(t *testing.T) {
		now := time.Now().UTC()
		doc := &store.EntityDoc{ID: "t/a", Template: "t", Identifier: "a", Title: "T",
			Properties: map[string]any{"x": 1, "y": "keep?"}, Relations: map[string]any{}, CreatedAt: now, UpdatedAt: now}
		require.NoError(t, s.WriteEntities(ctx, []store.EntityWrite{{Doc: doc}}))
		doc2 := &store.EntityDoc{ID: "t/a", Template: "t", Identifier: "a",
			Properties: map[string]any{"x": 2}, Relations: map[string]any{}, CreatedAt: now, UpdatedAt: now}
		require.NoError(t, s.WriteEntities(ctx, []store.EntityWrite{{Doc: doc2, Rev: 1}}))
		e, err := s.GetEntity(ctx, "t", "a")
		require.NoError(t, err)
		assert.Equal(t, "", e.Title)
		assert.Equal(t, map[string]any{"x": int32(2)}, e.Properties)
	})

	t.Run("bulk writes of more than a chunk, then deletes", func(t *testing.T) {
		var writes []store.EntityWrite
		var ids []string
		for i := 0; i < 3*store.BulkChunk+5; i++ {
			id := fmt.Sprintf("bulk/%03d", i)
			ids = append(ids, id)
			writes = append(writes, store.EntityWrite{Doc: &store.EntityDoc{ID: id, Template: "bulk", Identifier: fmt.Sprintf("%03d", i), Properties: map[string]any{}, Relations: map[string]any{}}})
		}
		require.NoError(t, s.WriteEntities(ctx, writes))
		// Replacing as many existing documents in one go must not hang the embedded server.
		for i := range writes {
			writes[i].Rev = 1
		}
		require.NoError(t, s.WriteEntities(ctx, writes))
		got, err := s.EntitiesByID(ctx, ids)
		require.NoError(t, err)
		assert.Len(t, got, len(ids))
		page, next, err := s.ListEntities(ctx, "bulk", 100, "")
		require.NoError(t, err)
		assert.Len(t, page, 100)
		page2, _, err := s.ListEntities(ctx, "bulk", 1000, next)
		require.NoError(t, err)
		assert.Len(t, page2, len(ids)-100)
		assert.Equal(t, "100", page2[0].Identifier)
		require.NoError(t, s.WriteEntities(ctx, []store.EntityWrite{{Delete: "bulk/000", Rev: 2}}))
		_, err = s.GetEntity(ctx, "bulk", "000")
		assert.ErrorIs(t, err, store.ErrNotFound)
	})

	// A sole writer knows every entity stored when it starts; later ones it wrote itself.
	require.NoError(t, s.WriteEntities(ctx, []store.EntityWrite{{Doc: &store.EntityDoc{ID: "c/elsewhere", Template: "c",
		Identifier: "elsewhere", Properties: map[string]any{"v": "db"}, Relations: map[string]any{}}}}))
	sole, err := store.Open(ctx, emb.URI(), "intake", store.SecretKey("test-key"))
	require.NoError(t, err)
	defer sole.Close(ctx)
	sole.SoleWriter(slog.Default())
	sole.OneWriteAtATime()
	for name, st := range map[string]*store.Store{"claims": s, "sole writer": sole} {
		t.Run(name, func(t *testing.T) { revisionGuards(t, st, strings.ReplaceAll(name, " ", "")) })
	}
	t.Run("sole writer: plans of other entities, or reading the same one, go on while one holds its lock", func(t *testing.T) {
		stripes := map[int]bool{store.StripeOf("t/held"): true, store.StripeOf("t/team"): true, store.StripeOf("t/free"): true}
		require.Len(t, stripes, 3, "the test's entities share no lock stripe")
		held, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		defer once.Do(func() { close(release) }) // on failure too: later tests need these stripes
		slow := make(chan error, 1)
		go func() {
			slow <- sole.PlanAndWrite(ctx, store.Locks{Write: []string{"t/held"}, Read: []string{"t/team"}}, func(context.Context) ([]store.EntityWrite, error) {
				close(held)
				<-release
				return nil, nil
			})
		}()
		<-held
		other := &store.EntityDoc{ID: "t/free", Template: "t", Identifier: "free", Properties: map[string]any{}, Relations: map[string]any{}}
		done := make(chan error, 1)
		go func() {
			// t/team as well: a placeholder (an insert) is allowed under a read lock
			team := &store.EntityDoc{ID: "t/team", Template: "t", Identifier: "team", Properties: map[string]any{}, Relations: map[string]any{}}
			done <- sole.PlanAndWrite(ctx, store.Locks{Write: []string{"t/free"}, Read: []string{"t/team"}}, func(context.Context) ([]store.EntityWrite, error) {
				return []store.EntityWrite{{Doc: team}, {Doc: other}}, nil
			})
		}()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Fatal("a plan of another entity waited for the held one")
		}
		once.Do(func() { close(release) })
		require.NoError(t, <-slow)
		for _, id := range []string{"free", "team"} {
			_, err := sole.GetEntity(ctx, "t", id)
			require.NoError(t, err, id)
		}
	})
	t.Run("sole writer: a plan that changes an entity it did not lock for writing is a conflict", func(t *testing.T) {
		team := &store.EntityDoc{ID: "t/team", Template: "t", Identifier: "team", Properties: map[string]any{"v": "changed"}, Relations: map[string]any{}}
		err := sole.PlanAndWrite(ctx, store.Locks{Write: []string{"t/member"}, Read: []string{"t/team"}}, func(context.Context) ([]store.EntityWrite, error) {
			return []store.EntityWrite{{Doc: team, Rev: 1}}, nil
		})
		assert.ErrorIs(t, err, store.ErrConflict)
		got, err := sole.GetEntity(ctx, "t", "team")
		require.NoError(t, err)
		assert.Empty(t, got.Properties, "the change was not applied")

		// an entity it did not name at all
		require.NotEqual(t, store.StripeOf("t/named"), store.StripeOf("t/stray"))
		err = sole.PlanAndWrite(ctx, store.Locks{Write: []string{"t/named"}}, func(context.Context) ([]store.EntityWrite, error) {
			return []store.EntityWrite{{Doc: &store.EntityDoc{ID: "t/stray", Template: "t", Identifier: "stray", Properties: map[string]any{}, Relations: map[string]any{}}}}, nil
		})
		assert.ErrorIs(t, err, store.ErrConflict)
		_, err = sole.GetEntity(ctx, "t", "stray")
		assert.ErrorIs(t, err, store.ErrNotFound, "the stray write was not applied")
	})
	t.Run("sole writer: entities it wrote, or read under a plan's locks, are answered from memory; nothing else", func(t *testing.T) {
		cl, err := mongo.Connect(options.Client().ApplyURI(emb.URI()))
		require.NoError(t, err)
		defer cl.Disconnect(ctx)
		entities := cl.Database("intake").Collection("entities")
		behind := func(id, v string) { // a change the store does not see
			_, err := entities.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: bson.D{{Key: "properties.v", Value: v}}}})
			require.NoError(t, err)
		}
		read := func(id string) any {
			got, err := sole.EntitiesByID(ctx, []string{id})
			require.NoError(t, err)
			require.Contains(t, got, id)
			return got[id].Properties["v"]
		}
		doc := func(id, v string) *store.EntityDoc {
			return &store.EntityDoc{ID: id, Template: "c", Identifier: id[2:], Properties: map[string]any{"v": v}, Relations: map[string]any{}}
		}
		write := func(id, v string, rev int64) error {
			return sole.PlanAndWrite(ctx, store.Locks{Write: []string{id}}, func(context.Context) ([]store.EntityWrite, error) {
				return []store.EntityWrite{{Doc: doc(id, v), Rev: rev}}, nil
			})
		}

		require.NoError(t, write("c/written", "one", 0))
		behind("c/written", "changed behind its back")
		assert.Equal(t, "one", read("c/written"), "what it wrote is answered from memory")
		require.NoError(t, write("c/written", "two", 1))
		assert.Equal(t, "two", read("c/written"), "and replaced by its next write")
		got, err := sole.EntitiesByID(ctx, []string{"c/written"})
		require.NoError(t, err)
		assert.Equal(t, int64(2), got["c/written"].Rev)
		got["c/written"].Properties["v"] = "a caller's change"
		assert.Equal(t, "two", read("c/written"), "callers get copies")

		// c/elsewhere was stored before the sole writer started (below)
		assert.Equal(t, "db", read("c/elsewhere"))
		behind("c/elsewhere", "db 2")
		assert.Equal(t, "db 2", read("c/elsewhere"), "a read outside a plan's locks is not kept")
		require.NoError(t, sole.PlanAndWrite(ctx, store.Locks{Read: []string{"c/elsewhere"}}, func(ctx context.Context) ([]store.EntityWrite, error) {
			_, err := sole.EntitiesByID(ctx, []string{"c/elsewhere", "c/absent"})
			return nil, err
		}))
		behind("c/elsewhere", "db 3")
		assert.Equal(t, "db 2", read("c/elsewhere"), "a read under the plan's locks is kept")
		got, err = sole.EntitiesByID(ctx, []string{"c/absent"})
		require.NoError(t, err)
		assert.Empty(t, got, "absence is not kept")

		assert.ErrorIs(t, write("c/written", "three", 0), store.ErrConflict, "an insert of an entity that exists")
		behind("c/written", "db 4")
		assert.Equal(t, "db 4", read("c/written"), "a write that did not apply forgets what was kept")
	})
	t.Run("audit inserts are idempotent by id", func(t *testing.T) {
		e := intake.AuditEntry{ID: "a1", Action: "CREATE", ResourceType: "entity", Status: "SUCCESS",
			Trigger: intake.AuditTrigger{At: time.Now(), By: intake.AuditBy{IntegrationID: "i"}, Origin: "WEBHOOK"}}
		require.NoError(t, s.InsertAudit(ctx, []intake.AuditEntry{e, e}))
		e.Message = "a retry must not overwrite"
		require.NoError(t, s.InsertAudit(ctx, []intake.AuditEntry{e}))
		got, _, err := s.ListAudit(ctx, intake.AuditFilter{Integration: "i", Limit: 10})
		require.NoError(t, err)
		require.Len(t, got, 1)
		assert.Empty(t, got[0].Message)
		assert.Nil(t, got[0].Details)

		// details (a missing relation's name and target template) are kept and returned.
		f := intake.AuditEntry{ID: "a2", Action: "CREATE", ResourceType: "entity", Status: "FAILURE",
			Message: "Relation 'github_repo' does not exist",
			Details: map[string]any{"relation": "github_repository", "target_template": "github_repository"},
			Trigger: intake.AuditTrigger{At: time.Now(), By: intake.AuditBy{IntegrationID: "i2"}, Origin: "WEBHOOK"}}
		require.NoError(t, s.InsertAudit(ctx, []intake.AuditEntry{f}))
		got, _, err = s.ListAudit(ctx, intake.AuditFilter{Integration: "i2", Limit: 10})
		require.NoError(t, err)
		require.Len(t, got, 1)
		assert.Equal(t, f.Message, got[0].Message)
		assert.Equal(t, f.Details, got[0].Details)
	})

	t.Run("one write at a time: concurrent audits and outcomes, combined, all land once", func(t *testing.T) {
		one, err := store.Open(ctx, emb.URI(), "intake", store.SecretKey("test-key"))
		require.NoError(t, err)
		defer one.Close(ctx)
		one.OneWriteAtATime()
		var wg sync.WaitGroup
		// More outcomes than FerretDB's pool has connections: combined beyond a bulk chunk,
		// they would wait for a connection forever.
		const n = 300
		errs := make(chan error, 2*n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d := intake.Delivery{ID: fmt.Sprintf("comb.%d", i), Integration: "comb", Key: fmt.Sprint(i), Origin: intake.OriginWebhook,
					Body: []byte(`{}`), ReceivedAt: time.Now()}
				e := intake.AuditEntry{ID: fmt.Sprintf("comb-%d", i), Action: "CREATE", ResourceType: "entity", Status: "SUCCESS", DeliveryID: d.ID,
					Trigger: intake.AuditTrigger{At: time.Now(), By: intake.AuditBy{IntegrationID: "comb"}, Origin: "WEBHOOK"}}
				shared := e
				shared.ID = "comb-shared" // every caller writes it: one entry, no error
				errs <- one.InsertAudit(ctx, []intake.AuditEntry{e, shared})
				errs <- one.RecordOutcome(ctx, d, store.DeliveryOutcome{Status: intake.DeliverySucceeded, WorkflowID: "wf-" + d.ID, RunID: "r"})
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		got, _, err := s.ListAudit(ctx, intake.AuditFilter{Integration: "comb", Limit: 1000})
		require.NoError(t, err)
		assert.Len(t, got, n+1)
		for i := range n {
			rec, err := s.GetDelivery(ctx, fmt.Sprintf("comb.%d", i))
			require.NoError(t, err)
			assert.Equal(t, intake.DeliverySucceeded, rec.Status)
			assert.Equal(t, fmt.Sprintf("wf-comb.%d", i), rec.WorkflowID)
		}
	})

	t.Run("integration secrets are encrypted at rest", func(t *testing.T) {
		in := &intake.Integration{Identifier: "sealed", Security: &intake.Security{SignatureHeaderName: "X", SignatureValue: "plain-s3cret", Secrets: []string{"next-s3cret"}}}
		_, err := s.PutIntegration(ctx, in)
		require.NoError(t, err)
		assert.Equal(t, "plain-s3cret", in.Security.SignatureValue, "the caller's value is not modified")
		raw, err := rawBody(ctx, emb.URI(), "integrations", "sealed")
		require.NoError(t, err)
		assert.NotContains(t, raw, "s3cret")
		assert.Contains(t, raw, "enc:v2:")
		got, err := s.GetIntegration(ctx, "sealed")
		require.NoError(t, err)
		assert.Equal(t, "plain-s3cret", got.Security.SignatureValue)
		assert.Equal(t, []string{"next-s3cret"}, got.Security.Secrets)
		other, err := store.Open(ctx, emb.URI(), "intake", store.SecretKey("another-key"))
		require.NoError(t, err)
		defer other.Close(ctx)
		_, err = other.GetIntegration(ctx, "sealed")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "INTAKE_SECRET_KEY")
		assert.NotContains(t, err.Error(), "s3cret")
	})

	t.Run("config writes bump the version", func(t *testing.T) {
		v0, err := s.ConfigVersion(ctx)
		require.NoError(t, err)
		created, err := s.PutTemplate(ctx, &intake.Template{Identifier: "t1"})
		require.NoError(t, err)
		assert.True(t, created)
		created, err = s.PutTemplate(ctx, &intake.Template{Identifier: "t1", Title: "again"})
		require.NoError(t, err)
		assert.False(t, created)
		v1, _ := s.ConfigVersion(ctx)
		assert.Equal(t, v0+2, v1)
		require.NoError(t, s.DeleteTemplate(ctx, "t1"))
		assert.ErrorIs(t, s.DeleteTemplate(ctx, "t1"), store.ErrNotFound)
	})
}

// rawBody reads a config document as stored, bypassing the store.
func rawBody(ctx context.Context, uri, col, id string) (string, error) {
	c, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		return "", err
	}
	defer c.Disconnect(ctx)
	var doc struct {
		Body string `bson:"body"`
	}
	err = c.Database("intake").Collection(col).FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc)
	return doc.Body, err
}

// revisionGuards: the entity writes' revision guard, in either mode (p names its entities).
func revisionGuards(t *testing.T, st *store.Store, p string) {
	ctx := context.Background()
	t.Run("a write at a stale revision is a conflict, never a lost update", func(t *testing.T) {
		doc := func(v string) *store.EntityDoc {
			return &store.EntityDoc{ID: "t/race" + p, Template: "t", Identifier: "race" + p, Properties: map[string]any{"v": v}, Relations: map[string]any{}}
		}
		require.NoError(t, st.WriteEntities(ctx, []store.EntityWrite{{Doc: doc("created")}}))
		assert.ErrorIs(t, st.WriteEntities(ctx, []store.EntityWrite{{Doc: doc("created twice")}}), store.ErrConflict)
		// Two writers read revision 1; the first wins, the second must read again.
		require.NoError(t, st.WriteEntities(ctx, []store.EntityWrite{{Doc: doc("first"), Rev: 1}}))
		assert.ErrorIs(t, st.WriteEntities(ctx, []store.EntityWrite{{Doc: doc("second"), Rev: 1}}), store.ErrConflict)
		assert.ErrorIs(t, st.WriteEntities(ctx, []store.EntityWrite{{Delete: "t/race" + p, Rev: 1}}), store.ErrConflict)
		got, err := st.EntitiesByID(ctx, []string{"t/race" + p})
		require.NoError(t, err)
		assert.Equal(t, "first", got["t/race"+p].Properties["v"])
		assert.Equal(t, int64(2), got["t/race"+p].Rev)
	})

	t.Run("concurrent read-modify-write loops lose nothing", func(t *testing.T) {
		eightWriters(t, st, "t/rmw"+p, func(plan func(context.Context) ([]store.EntityWrite, error)) error {
			writes, err := plan(ctx)
			if err != nil {
				return err
			}
			return st.WriteEntities(ctx, writes)
		})
	})

	t.Run("concurrent plans that read and write lose nothing", func(t *testing.T) {
		eightWriters(t, st, "t/plan"+p, func(plan func(context.Context) ([]store.EntityWrite, error)) error {
			return st.PlanAndWrite(ctx, store.Locks{Write: []string{"t/plan" + p}}, plan)
		})
		// A plan's error is returned and nothing is written.
		boom := errors.New("boom")
		assert.ErrorIs(t, st.PlanAndWrite(ctx, store.Locks{Write: []string{"t/boom"}}, func(context.Context) ([]store.EntityWrite, error) { return nil, boom }), boom)
	})
}

// eightWriters has eight goroutines each add its own property to entity id, every one reading
// the entity and writing it back through write (again on ErrConflict), and checks none is lost.
func eightWriters(t *testing.T, st *store.Store, id string, write func(plan func(context.Context) ([]store.EntityWrite, error)) error) {
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for {
				err := write(func(ctx context.Context) ([]store.EntityWrite, error) {
					got, err := st.EntitiesByID(ctx, []string{id})
					if err != nil {
						return nil, err
					}
					props := map[string]any{fmt.Sprintf("k%d", i): i}
					var rev int64
					if d := got[id]; d != nil {
						maps.Copy(props, d.Properties)
						rev = d.Rev
					}
					return []store.EntityWrite{{Rev: rev, Doc: &store.EntityDoc{ID: id, Template: "t", Identifier: id[2:], Properties: props, Relations: map[string]any{}}}}, nil
				})
				if err == nil {
					return
				}
				if !errors.Is(err, store.ErrConflict) {
					t.Error(err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	got, err := st.EntitiesByID(ctx, []string{id})
	require.NoError(t, err)
	assert.Len(t, got[id].Properties, 8, "%v", got[id].Properties)
	assert.Equal(t, int64(8), got[id].Rev)
}
