package mappings_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/mappings"
)

func TestEntitiesPerDeliveryAreCapped(t *testing.T) {
	tpl := &intake.Template{Identifier: "t", Schema: intake.TemplateSchema{Properties: map[string]json.RawMessage{}}}
	in := intake.Integration{Identifier: "many", Mappings: []intake.Mapping{{Template: "t", ItemsToParse: ".items",
		Entity: intake.EntityMapping{Identifier: ".item"}}}}
	p, err := mappings.Compile(in, map[string]*intake.Template{"t": tpl})
	require.NoError(t, err)
	items := func(n int) any {
		list := make([]any, n)
		for i := range list {
			list[i] = strings.Repeat("x", 1+i%7) + string(rune('a'+i%26))
		}
		return map[string]any{"items": list}
	}
	templates := map[string]*intake.Template{"t": tpl}

	_, changes := p.Map(context.Background(), items(10), mappings.Env{MaxEntities: 10}, templates)
	assert.Len(t, changes, 10, "at the cap: mapped")

	_, changes = p.Map(context.Background(), items(11), mappings.Env{MaxEntities: 10}, templates)
	require.Len(t, changes, 1, "over the cap: one failure instead of the entities")
	assert.True(t, changes[0].Failed())
	assert.Equal(t, intake.ErrMapping, changes[0].ErrorType)
	assert.Contains(t, changes[0].Message, "more than 10 entities")

	_, changes = p.Map(context.Background(), items(1001), mappings.Env{}, templates)
	require.Len(t, changes, 1, "the default cap is 1,000")
	assert.True(t, changes[0].Failed())
}
