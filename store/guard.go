package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// The revision guard on FerretDB, which holds across processes.
//
// FerretDB v1.24.2 runs findAndModify, update and delete as a query followed by a separate
// write, so a filter on {_id, rev} is not atomic across connections; an insert of a unique _id
// is. So a write of revision r+1 first inserts the claim {_id: "<entity id>#<r+1>"} into
// entity_claims: one writer gets it, every other one gets a duplicate-key error (ErrConflict:
// read again). The holder then checks that the entity is still at revision r (claims are
// released after each write, so a writer that read long ago can claim a free revision, and
// the check turns it away), writes, and deletes its claim.
//
// A delete leaves a tombstone with its revision in entity_tombstones and an entity created
// again continues from it, so revisions never repeat: a writer that read revision 3 of the
// entity before it was deleted cannot match revision 3 of the new one. Tombstones are kept (one
// small document per deleted entity).
//
// A holder that dies between its claim and its write leaves the claim behind. After claimLease
// others pass over that revision (claim the next one, and delete the orphan once they wrote).
// A holder abandons its claim when it could not start its write within claimLease/4, and the
// write is bounded by claimLease/4, so no holder writes once others may pass over its revision.

const (
	colClaims     = "entity_claims"
	colTombstones = "entity_tombstones"
	// claimLease is how long a claim holds against others; a holder is done well before.
	claimLease = time.Minute
	// maxPassOver bounds how many orphaned revisions one write passes over before it gives up.
	maxPassOver = 4
)

// revState is where an entity stands: its revision, or its tombstone's when it does not exist.
type revState struct {
	rev    int64
	exists bool
}

func claimID(entity string, rev int64) string { return entity + "#" + strconv.FormatInt(rev, 10) }

// writeClaimed writes one chunk on FerretDB under revision claims. chain carries what the call's
// earlier writes left of each entity, so a later write of the same entity follows on from them.
func (s *Store) writeClaimed(ctx context.Context, chunk []EntityWrite, chain map[string]*revState) error {
	release, err := s.updating(ctx, len(chunk))
	if err != nil {
		return err
	}
	defer release()
	started := time.Now()
	var held, passed []string
	defer func() { s.releaseClaims(held) }()

	type check struct {
		id   string
		want revState
	}
	var checks []check
	targets := make([]int64, len(chunk))
	for i, w := range chunk {
		id := w.id()
		st := chain[id]
		if st == nil {
			st = &revState{rev: w.Rev, exists: w.Rev != 0}
			if w.Rev == 0 {
				// Read absent: the new entity continues from the tombstone of a deleted one.
				if st.rev, err = s.tombstone(ctx, id); err != nil {
					return err
				}
			}
			chain[id] = st
			checks = append(checks, check{id, *st})
		}
		target, orphans, err := s.claim(ctx, id, st.rev+1)
		if err != nil {
			return err
		}
		held = append(held, claimID(id, target))
		passed = append(passed, orphans...)
		targets[i] = target
		*st = revState{rev: target, exists: w.Doc != nil}
	}
	// The revisions are ours: the entities must still be where their writers read them.
	for _, c := range checks {
		cur, err := s.revisionOf(ctx, c.id)
		if err != nil {
			return err
		}
		if cur != c.want {
			return ErrConflict
		}
	}
	if time.Since(started) > claimLease/4 {
		return ErrConflict // too late to write safely; read again
	}
	wctx, cancel := context.WithTimeout(ctx, claimLease/4)
	defer cancel()

	var tombs, models []mongo.WriteModel
	now := time.Now().UTC()
	for i, w := range chunk {
		filter := bson.D{{Key: "_id", Value: w.id()}}
		if w.Doc == nil {
			tombs = append(tombs, mongo.NewReplaceOneModel().SetFilter(filter).SetUpsert(true).
				SetReplacement(bson.D{{Key: "_id", Value: w.id()}, {Key: "rev", Value: targets[i]}, {Key: "at", Value: now}}))
			models = append(models, mongo.NewDeleteOneModel().SetFilter(filter))
			continue
		}
		w.Doc.Rev = targets[i]
		models = append(models, mongo.NewReplaceOneModel().SetFilter(filter).SetReplacement(w.Doc.stored()).SetUpsert(true))
	}
	// Tombstones first: whoever sees the entity gone also sees the revision it reached.
	if len(tombs) > 0 {
		if _, err := s.db.Collection(colTombstones).BulkWrite(wctx, tombs, options.BulkWrite().SetOrdered(true)); err != nil {
			return fmt.Errorf("write %d tombstones: %w", len(tombs), err)
		}
	}
	if err := s.bulkWriteEntities(wctx, models); err != nil {
		return err
	}
	held = append(held, passed...) // the revisions passed over are behind us now
	return nil
}

// claim inserts the claim of revision target of an entity. A claim held by another writer is a
// conflict; one older than claimLease is an orphan, passed over for the next revision.
func (s *Store) claim(ctx context.Context, id string, target int64) (int64, []string, error) {
	var orphans []string
	for range maxPassOver + 1 {
		cid := claimID(id, target)
		_, err := s.db.Collection(colClaims).InsertOne(ctx, bson.D{{Key: "_id", Value: cid}, {Key: "at", Value: time.Now().UTC()}})
		if err == nil {
			return target, orphans, nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return 0, nil, fmt.Errorf("claim revision %d of %s: %w", target, id, err)
		}
		var c struct {
			At time.Time `bson:"at"`
		}
		err = s.findOne(ctx, colClaims, bson.D{{Key: "_id", Value: cid}}).Decode(&c)
		switch {
		case errors.Is(err, mongo.ErrNoDocuments):
			return 0, nil, ErrConflict // its holder just finished: read again
		case err != nil:
			return 0, nil, fmt.Errorf("read claim %s: %w", cid, err)
		case time.Since(c.At) < claimLease:
			return 0, nil, ErrConflict
		}
		orphans = append(orphans, cid)
		target++
	}
	return 0, nil, ErrConflict
}

// releaseClaims deletes claims, also when the caller's context is done (best effort: a claim
// left behind only delays that entity's next write by claimLease).
func (s *Store) releaseClaims(ids []string) {
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// $in scans entity_claims on FerretDB: it holds only the claims of writes in flight.
	_, _ = s.db.Collection(colClaims).DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
}

// revisionOf reads where an entity stands now, by _id.
func (s *Store) revisionOf(ctx context.Context, id string) (revState, error) {
	var d struct {
		Rev int64 `bson:"rev"`
	}
	err := s.findOne(ctx, colEntities, bson.D{{Key: "_id", Value: id}},
		options.FindOne().SetProjection(bson.D{{Key: "rev", Value: 1}})).Decode(&d)
	switch {
	case err == nil:
		return revState{rev: d.Rev, exists: true}, nil
	case !errors.Is(err, mongo.ErrNoDocuments):
		return revState{}, fmt.Errorf("check revision of %s: %w", id, err)
	}
	rev, err := s.tombstone(ctx, id)
	return revState{rev: rev}, err
}

// tombstone is the revision a deleted entity reached (0: never deleted).
func (s *Store) tombstone(ctx context.Context, id string) (int64, error) {
	var t struct {
		Rev int64 `bson:"rev"`
	}
	err := s.findOne(ctx, colTombstones, bson.D{{Key: "_id", Value: id}}).Decode(&t)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read tombstone of %s: %w", id, err)
	}
	return t.Rev, nil
}
