package kafka

import (
	"context"
	"fmt"

	kafkago "github.com/segmentio/kafka-go"
)

// resetOffsets moves a group's committed offsets that lie outside their partition (past its end:
// the topic was deleted and created again, or the listener points at another cluster; before its
// start: retention deleted the records) to the partition's first offset, so its records are read
// instead of waited for. The group's consumer is stopped first: an empty group takes commits
// from outside a generation.
func (l *Listener) resetOffsets(ctx context.Context, group string, topics []string) error {
	c := &kafkago.Client{Addr: kafkago.TCP(l.Brokers...)}
	meta, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("metadata of %v: %w", topics, err)
	}
	parts := map[string][]int{}
	reqs := map[string][]kafkago.OffsetRequest{}
	for _, t := range meta.Topics {
		for _, p := range t.Partitions {
			parts[t.Name] = append(parts[t.Name], p.ID)
			reqs[t.Name] = append(reqs[t.Name], kafkago.FirstOffsetOf(p.ID), kafkago.LastOffsetOf(p.ID))
		}
	}
	bounds, err := c.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: reqs})
	if err != nil {
		return fmt.Errorf("list offsets of %v: %w", topics, err)
	}
	committed, err := c.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: parts})
	if err != nil {
		return fmt.Errorf("committed offsets of group %s: %w", group, err)
	}
	first := map[string]map[int][2]int64{}
	for t, ps := range bounds.Topics {
		first[t] = map[int][2]int64{}
		for _, p := range ps {
			first[t][p.Partition] = [2]int64{p.FirstOffset, p.LastOffset}
		}
	}
	commits := map[string][]kafkago.OffsetCommit{}
	for t, ps := range committed.Topics {
		for _, p := range ps {
			b, ok := first[t][p.Partition]
			if !ok || p.CommittedOffset < 0 || (p.CommittedOffset >= b[0] && p.CommittedOffset <= b[1]) {
				continue
			}
			l.Log.Warn("kafka committed offset outside its partition: reading from the partition's first record",
				"group", group, "topic", t, "partition", p.Partition, "committed", p.CommittedOffset, "first", b[0], "end", b[1])
			commits[t] = append(commits[t], kafkago.OffsetCommit{Partition: p.Partition, Offset: b[0]})
		}
	}
	if len(commits) == 0 {
		return nil
	}
	res, err := c.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{GroupID: group, GenerationID: -1, Topics: commits})
	if err != nil {
		return fmt.Errorf("reset offsets of group %s: %w", group, err)
	}
	for t, ps := range res.Topics {
		for _, p := range ps {
			if p.Error != nil {
				return fmt.Errorf("reset offset of group %s on %s/%d: %w", group, t, p.Partition, p.Error)
			}
		}
	}
	return nil
}
