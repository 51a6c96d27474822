package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"intake"
)

// Config documents keep the operator's JSON verbatim (body), so what was written is what is read.
type configDoc struct {
	ID        string    `bson:"_id"`
	Body      string    `bson:"body"`
	UpdatedAt time.Time `bson:"updated_at"`
}

const configVersionID = "config_version"

// ConfigVersion is a counter bumped by every configuration write.
func (s *Store) ConfigVersion(ctx context.Context) (int64, error) {
	var doc struct {
		Version int64 `bson:"version"`
	}
	err := s.findOne(ctx, colMeta, bson.D{{Key: "_id", Value: configVersionID}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read config version: %w", err)
	}
	return doc.Version, nil
}

func (s *Store) bumpConfigVersion(ctx context.Context) error {
	_, err := s.db.Collection(colMeta).UpdateOne(ctx, bson.D{{Key: "_id", Value: configVersionID}},
		bson.D{{Key: "$inc", Value: bson.D{{Key: "version", Value: int64(1)}}}}, options.UpdateOne().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("bump config version: %w", err)
	}
	return nil
}

// LoadConfig reads every template and integration; broken is as in ListIntegrations.
func (s *Store) LoadConfig(ctx context.Context) (tpls []intake.Template, ints []intake.Integration, broken map[string]error, err error) {
	if tpls, err = s.ListTemplates(ctx); err != nil {
		return nil, nil, nil, err
	}
	if ints, broken, err = s.ListIntegrations(ctx); err != nil {
		return nil, nil, nil, err
	}
	return tpls, ints, broken, nil
}

// ListTemplates returns every template, sorted by identifier.
func (s *Store) ListTemplates(ctx context.Context) ([]intake.Template, error) {
	return listConfig[intake.Template](ctx, s, colTemplates)
}

// ListIntegrations returns every integration whose secrets decrypt, sorted by identifier, and
// for each other one why not (wrapping ErrUndecryptable): one such integration must not hide
// the others.
func (s *Store) ListIntegrations(ctx context.Context) ([]intake.Integration, map[string]error, error) {
	ints, err := listConfig[intake.Integration](ctx, s, colIntegrations)
	if err != nil {
		return nil, nil, err
	}
	out := ints[:0]
	broken := map[string]error{}
	for i := range ints {
		open, _, err := s.openSecrets(&ints[i])
		if err != nil {
			broken[ints[i].Identifier] = err
			continue
		}
		out = append(out, *open)
	}
	return out, broken, nil
}

// GetTemplate returns one template or ErrNotFound.
func (s *Store) GetTemplate(ctx context.Context, id string) (*intake.Template, error) {
	return getConfig[intake.Template](ctx, s, colTemplates, id)
}

// GetIntegration returns one integration (secrets decrypted), ErrNotFound, or an error
// wrapping ErrUndecryptable.
func (s *Store) GetIntegration(ctx context.Context, id string) (*intake.Integration, error) {
	in, err := getConfig[intake.Integration](ctx, s, colIntegrations, id)
	if err != nil {
		return nil, err
	}
	open, _, err := s.openSecrets(in)
	if err != nil {
		return nil, fmt.Errorf("integration %s: %w", id, err)
	}
	return open, nil
}

// PutTemplate creates or replaces a template; created says which.
func (s *Store) PutTemplate(ctx context.Context, t *intake.Template) (created bool, err error) {
	return s.putConfig(ctx, colTemplates, t.Identifier, t)
}

// PutIntegration creates or replaces an integration, secrets encrypted; created says which.
func (s *Store) PutIntegration(ctx context.Context, in *intake.Integration) (created bool, err error) {
	sealed, err := s.sealSecrets(in)
	if err != nil {
		return false, fmt.Errorf("integration %s: %w", in.Identifier, err)
	}
	return s.putConfig(ctx, colIntegrations, in.Identifier, sealed)
}

// DeleteTemplate removes a template or returns ErrNotFound.
func (s *Store) DeleteTemplate(ctx context.Context, id string) error {
	return s.deleteConfig(ctx, colTemplates, id)
}

// DeleteIntegration removes an integration or returns ErrNotFound.
func (s *Store) DeleteIntegration(ctx context.Context, id string) error {
	return s.deleteConfig(ctx, colIntegrations, id)
}

func listConfig[T any](ctx context.Context, s *Store, col string) ([]T, error) {
	docs, err := listDocs(ctx, s, col)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(docs))
	for _, d := range docs {
		var v T
		if err := json.Unmarshal([]byte(d.Body), &v); err != nil {
			return nil, fmt.Errorf("decode %s/%s: %w", col, d.ID, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func listDocs(ctx context.Context, s *Store, col string) ([]configDoc, error) {
	cur, err := s.db.Collection(col).Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", col, err)
	}
	var docs []configDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("list %s: %w", col, err)
	}
	return docs, nil
}

func getConfig[T any](ctx context.Context, s *Store, col, id string) (*T, error) {
	d, err := getDoc(ctx, s, col, id)
	if err != nil {
		return nil, err
	}
	var v T
	if err := json.Unmarshal([]byte(d.Body), &v); err != nil {
		return nil, fmt.Errorf("decode %s/%s: %w", col, id, err)
	}
	return &v, nil
}

func getDoc(ctx context.Context, s *Store, col, id string) (*configDoc, error) {
	var d configDoc
	err := s.findOne(ctx, col, bson.D{{Key: "_id", Value: id}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", col, id, err)
	}
	return &d, nil
}

func (s *Store) putConfig(ctx context.Context, col, id string, v any) (bool, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return false, fmt.Errorf("encode %s/%s: %w", col, id, err)
	}
	res, err := s.db.Collection(col).ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}},
		configDoc{ID: id, Body: string(body), UpdatedAt: time.Now().UTC()}, options.Replace().SetUpsert(true))
	if err != nil {
		return false, fmt.Errorf("put %s/%s: %w", col, id, err)
	}
	return res.UpsertedCount > 0, s.bumpConfigVersion(ctx)
}

func (s *Store) deleteConfig(ctx context.Context, col, id string) error {
	res, err := s.db.Collection(col).DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
	if err != nil {
		return fmt.Errorf("delete %s/%s: %w", col, id, err)
	}
	if res.DeletedCount == 0 {
		return ErrNotFound
	}
	return s.bumpConfigVersion(ctx)
}
