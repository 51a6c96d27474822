package store

import (
	"hash/fnv"
	"slices"
	"sync"
)

// Locks names the entities a plan reads (PlanAndWrite): Write the ones it may change or delete,
// Read the ones it only reads or creates. Creating is an insert of a new _id, which the store
// makes safe on its own: a second creator gets a duplicate key (ErrConflict).
type Locks struct {
	Write, Read []string
}

// entityLocks are this process's locks on entities, striped: an entity's ID hashes to one of a
// fixed set of read-write mutexes, so memory stays bounded, two writers of one entity always
// meet, and writers of different entities rarely do.
type entityLocks struct {
	stripes [lockStripes]sync.RWMutex
}

const lockStripes = 256

// stripeOf is the stripe of an entity ID: a fixed hash, so that which IDs share one is the same
// in every run.
func stripeOf(id string) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % lockStripes)
}

// heldStripe is one stripe a caller holds, and how.
type heldStripe struct {
	index     int
	exclusive bool
}

// held are the stripes one caller holds, in ascending order.
type held struct {
	l       *entityLocks
	stripes []heldStripe
}

// lock takes the stripes of want: exclusively those of Write, shared those of Read only. They
// are taken in ascending order, so two callers never wait on each other in a cycle.
func (l *entityLocks) lock(want Locks) held {
	stripes := make([]heldStripe, 0, len(want.Write)+len(want.Read))
	for _, id := range want.Write {
		stripes = append(stripes, heldStripe{stripeOf(id), true})
	}
	for _, id := range want.Read {
		stripes = append(stripes, heldStripe{stripeOf(id), false})
	}
	// by index, exclusive first, so that Compact keeps the exclusive one of a stripe in both
	slices.SortFunc(stripes, func(a, b heldStripe) int {
		if a.index != b.index {
			return a.index - b.index
		}
		if a.exclusive == b.exclusive {
			return 0
		}
		if a.exclusive {
			return -1
		}
		return 1
	})
	stripes = slices.CompactFunc(stripes, func(a, b heldStripe) bool { return a.index == b.index })
	for _, s := range stripes {
		if s.exclusive {
			l.stripes[s.index].Lock()
		} else {
			l.stripes[s.index].RLock()
		}
	}
	return held{l: l, stripes: stripes}
}

func (h held) unlock() {
	for _, s := range slices.Backward(h.stripes) {
		if s.exclusive {
			h.l.stripes[s.index].Unlock()
		} else {
			h.l.stripes[s.index].RUnlock()
		}
	}
}

// allows reports whether these stripes keep other writers of w's entity out: any write under
// an exclusive stripe, an insert of a new entity under a shared one.
func (h held) allows(w EntityWrite) bool {
	s, found := h.stripe(w.id())
	return found && (s.exclusive || w.Doc != nil && w.Rev == 0)
}

// covers reports whether these stripes include id's, shared or exclusive.
func (h held) covers(id string) bool {
	_, found := h.stripe(id)
	return found
}

// stripe is the held stripe of id, if it is held.
func (h held) stripe(id string) (heldStripe, bool) {
	i, found := slices.BinarySearchFunc(h.stripes, stripeOf(id), func(s heldStripe, index int) int { return s.index - index })
	if !found {
		return heldStripe{}, false
	}
	return h.stripes[i], true
}
