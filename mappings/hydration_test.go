package mappings_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/examples"
	"intake/mappings"
)

// bundlePrograms compiles every integration of the seed bundles against the bundle's templates.
func bundlePrograms(t *testing.T) (map[string]*mappings.Program, map[string]*intake.Template) {
	t.Helper()
	bundles, err := examples.Bundles()
	require.NoError(t, err)
	progs := map[string]*mappings.Program{}
	tpls := map[string]*intake.Template{}
	for _, b := range bundles {
		for i := range b.Templates {
			tpls[b.Templates[i].Identifier] = &b.Templates[i]
		}
	}
	for _, b := range bundles {
		for _, in := range b.Integrations {
			p, err := mappings.Compile(in, tpls)
			require.NoError(t, err, "%s/%s", b.Name, in.Identifier)
			progs[in.Identifier] = p
		}
	}
	return progs, tpls
}

func decode(t *testing.T, s string) any {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal([]byte(s), &v))
	return v
}

func TestHydrationPlan(t *testing.T) {
	progs, _ := bundlePrograms(t)
	tests := []struct {
		name, integration, notification string
		want                            mappings.HydrationPlan
	}{
		{"data source update fetches the data source", "data_catalog",
			`{"notificationType":"dataSourceUpdated","modelType":"datasource","modelId":3}`,
			mappings.HydrationPlan{Operation: mappings.HydrateFetch, Route: 2, URL: "http://127.0.0.1:8090/dataSource/{id}", ID: "3"}},
		{"added to project fetches the project's data sources", "data_catalog",
			`{"notificationType":"addedToProject","modelType":"project","modelId":1,"dataSourceId":1}`,
			mappings.HydrationPlan{Operation: mappings.HydrateFetch, Route: 0, URL: "http://127.0.0.1:8090/project/{id}/datasources", ID: "1"}},
		{"project policy update fetches the project", "data_catalog",
			`{"notificationType":"policyUpdated","modelType":"project","modelId":1}`,
			mappings.HydrationPlan{Operation: mappings.HydrateFetch, Route: 1, URL: "http://127.0.0.1:8090/project/{id}", ID: "1"}},
		{"no route matches: nothing to fetch", "data_catalog",
			`{"notificationType":"userDeleted","modelType":"user","modelId":4}`,
			mappings.HydrationPlan{Operation: mappings.HydrateNone, Route: -1}},
		{"a delete event is a delete without a fetch", "identity_users",
			`{"id":"U1","entityType":"USER","eventType":"DELETE"}`,
			mappings.HydrationPlan{Operation: mappings.HydrateDelete, Route: 0, URL: "http://127.0.0.1:8090/users/{id}", ID: "U1", Event: "DELETE"}},
		{"bare field names work as id_path and event_path; event_map upsert by default", "shop_orders",
			`{"record_id":"ord_1","event":"ResourceCreated"}`,
			mappings.HydrationPlan{Operation: mappings.HydrateFetch, Route: -1, URL: "http://127.0.0.1:8090/orders/{id}", ID: "ord_1", Event: "ResourceCreated"}},
		{"event_map delete", "shop_orders",
			`{"record_id":"ord_1","event":"ResourceDeleted"}`,
			mappings.HydrationPlan{Operation: mappings.HydrateDelete, Route: -1, URL: "http://127.0.0.1:8090/orders/{id}", ID: "ord_1", Event: "ResourceDeleted"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := progs[tc.integration]
			got, err := p.Hydration.Plan(context.Background(), decode(t, tc.notification), mappings.Env{})
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}

	t.Run("an id path that yields nothing is an error naming the field", func(t *testing.T) {
		_, err := progs["shop_orders"].Hydration.Plan(context.Background(), decode(t, `{"event":"x"}`), mappings.Env{})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "hydration.id_path")
	})
}

func TestMapHydrated(t *testing.T) {
	progs, tpls := bundlePrograms(t)
	ctx := context.Background()
	p := progs["shop_orders"]
	plan := mappings.HydrationPlan{Operation: mappings.HydrateFetch, ID: "ord_1"}

	t.Run("merge owns the mapped fields: one the upstream cleared is listed to clear", func(t *testing.T) {
		_, changes := p.MapHydrated(ctx, plan, decode(t, `{"id":"ord_1","number":1,"status":"paid"}`), decode(t, `{"record_id":"ord_1"}`), mappings.Env{}, tpls)
		require.Len(t, changes, 1)
		assert.Equal(t, intake.UpdateMerge, changes[0].UpdateMode)
		assert.ElementsMatch(t, []string{"properties.total", "properties.customer_email", "properties.note"}, changes[0].Clear)
		assert.Equal(t, map[string]any{"number": 1.0, "status": "paid"}, changes[0].Properties)
	})

	t.Run("without merge the entity is replaced", func(t *testing.T) {
		var in intake.Integration
		require.NoError(t, json.Unmarshal([]byte(`{"identifier":"plain","hydration":{"url":"https://shop.example.com/orders/{id}"},
		  "mappings":[{"template":"shop_order","update_mode":"merge","entity":{"identifier":".id","properties":{"number":".number","status":".status"}}}]}`), &in))
		replace, err := mappings.Compile(in, tpls)
		require.NoError(t, err)
		_, changes := replace.MapHydrated(ctx, plan, decode(t, `{"id":"ord_1","number":1,"status":"paid"}`), nil, mappings.Env{}, tpls)
		require.Len(t, changes, 1)
		assert.Equal(t, intake.UpdateReplace, changes[0].UpdateMode)
		assert.Empty(t, changes[0].Clear)
	})

	t.Run("the notification is $notification", func(t *testing.T) {
		id := progs["identity_users"]
		_, changes := id.MapHydrated(ctx, mappings.HydrationPlan{Operation: mappings.HydrateFetch, ID: "U1"},
			decode(t, `{"id":"U1","email":"u@x.io"}`), decode(t, `{"id":"U1","entityType":"USER","timestamp":"2019-01-01T00:00:00Z"}`), mappings.Env{}, tpls)
		require.Len(t, changes, 1)
		require.NotNil(t, changes[0].EventTime)
		assert.Equal(t, "2019-01-01T00:00:00Z", changes[0].EventTime.Format("2006-01-02T15:04:05Z07:00"))
	})

	t.Run("a delete names the entity by the notification's id when the mapping cannot", func(t *testing.T) {
		outcomes, changes := p.MapHydrated(ctx, mappings.HydrationPlan{Operation: mappings.HydrateDelete, ID: "ord_9"},
			nil, decode(t, `{"record_id":"ord_9","event":"ResourceDeleted"}`), mappings.Env{}, tpls)
		require.Len(t, outcomes, 1)
		assert.False(t, outcomes[0].Filtered)
		require.Len(t, changes, 1)
		assert.Equal(t, intake.OperationDelete, changes[0].Operation)
		assert.Equal(t, "ord_9", changes[0].Identifier)
	})

	t.Run("no route: every mapping filtered, nothing changes", func(t *testing.T) {
		outcomes, changes := p.MapHydrated(ctx, mappings.HydrationPlan{Operation: mappings.HydrateNone}, nil, decode(t, `{}`), mappings.Env{}, tpls)
		require.Len(t, outcomes, 1)
		assert.True(t, outcomes[0].Filtered)
		assert.Empty(t, changes)
	})

	t.Run("a plain (not hydrated) mapping keeps no clear list", func(t *testing.T) {
		_, changes := p.Map(ctx, decode(t, `{"id":"ord_1","number":1,"status":"paid"}`), mappings.Env{}, tpls)
		require.Len(t, changes, 1)
		assert.Empty(t, changes[0].Clear)
	})
}

func TestHydrationConfigErrors(t *testing.T) {
	_, tpls := bundlePrograms(t)
	base := func(extra string) intake.Integration {
		var in intake.Integration
		require.NoError(t, json.Unmarshal([]byte(`{"identifier":"x",`+extra+`,"mappings":[{"template":"shop_order","entity":{"identifier":".id"}}]}`), &in))
		return in
	}
	tests := []struct{ name, doc, field string }{
		{"unknown field", `"hydration":{"url":"https://api.example.com/{id}","methd":"GET"}`, "hydration.methd"},
		{"unknown route field", `"hydration":{"routes":[{"when":"true","url":"https://a.example.com/{id}","verb":"GET"}]}`, "hydration.routes[0].verb"},
		{"route without condition", `"hydration":{"routes":[{"url":"https://a.example.com/{id}"}]}`, "hydration.routes[0].when"},
		{"no url", `"hydration":{"id_path":".id"}`, "hydration.url"},
		{"bad JQ in id_path", `"hydration":{"url":"https://a.example.com/{id}","id_path":".a | ("}`, "hydration.id_path"},
		{"delete events need an event path", `"hydration":{"url":"https://a.example.com/{id}","delete_events":["gone"]}`, "hydration.event_path"},
		{"unknown event_map value", `"hydration":{"url":"https://a.example.com/{id}","event_path":"e","event_map":{"X":"drop"}}`, "hydration.event_map.X"},
		{"credential that does not exist", `"hydration":{"url":"https://a.example.com/{id}","headers":{"Authorization":"secret:tok"}}`, "hydration.headers.Authorization"},
		{"timeout over the limit", `"hydration":{"url":"https://a.example.com/{id}","timeout":"2h"}`, "hydration.timeout"},
		{"size cap over the limit", `"hydration":{"url":"https://a.example.com/{id}","max_bytes":99999999}`, "hydration.max_bytes"},
		{"hydration is not an object", `"hydration":"https://a.example.com"`, "hydration"},
		{"sync timeout over the limit", `"response":{"mode":"sync","timeout":"5m"}`, "response.timeout"},
		{"batch on a webhook", `"source":{"kind":"webhook","batch":{}}`, "source.batch"},
		{"batch with hydration", `"source":{"kind":"kafka","topics":["t"],"batch":{}},"hydration":{"url":"https://a.example.com/{id}"}`, "source.batch"},
		{"batch too large", `"source":{"kind":"kafka","topics":["t"],"batch":{"max_records":5000}}`, "source.batch.max_records"},
		{"batch wait not a duration", `"source":{"kind":"pubsub","subscription":"s","batch":{"max_wait":"soon"}}`, "source.batch.max_wait"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mappings.Compile(base(tc.doc), tpls)
			var ce *mappings.ConfigError
			require.ErrorAs(t, err, &ce)
			var fields []string
			for _, p := range ce.Problems {
				fields = append(fields, p.Field)
			}
			assert.Contains(t, fields, tc.field)
		})
	}
	t.Run("a batch takes its defaults", func(t *testing.T) {
		p, err := mappings.Compile(base(`"source":{"kind":"kafka","topics":["t"],"batch":{}}`), tpls)
		require.NoError(t, err)
		require.NotNil(t, p.Batch)
		assert.Equal(t, mappings.BatchPlan{MaxRecords: 500, MaxWait: 200 * time.Millisecond}, *p.Batch)
	})
	t.Run("a null hydration is no hydration", func(t *testing.T) {
		p, err := mappings.Compile(base(`"hydration":null`), tpls)
		require.NoError(t, err)
		assert.Nil(t, p.Hydration)
	})
}
