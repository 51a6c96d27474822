package kafka

import (
	"context"
	"fmt"
	"strconv"

	kafkago "github.com/segmentio/kafka-go"

	"intake/metrics"
)

// resetOffsets moves a group's committed offsets that lie outside their partition (past its end:
// the topic was deleted and created again, or the listener points at another cluster; before its
// start: retention deleted the records) to the partition's first offset, so its records are read
// instead of waited for. The group's consumer is stopped first: an empty group takes commits
// from outside a generation.
func (l *Listener) resetOffsets(ctx context.Context, group string, topics []string) error {
	parts, err := l.partitions(ctx, group, topics)
	if err != nil {
		return err
	}
	commits := map[string][]kafkago.OffsetCommit{}
	for _, p := range parts {
		if p.committed < 0 || (p.committed >= p.first && p.committed <= p.end) {
			continue
		}
		l.Log.Warn("kafka committed offset outside its partition: reading from the partition's first record",
			"group", group, "topic", p.topic, "partition", p.partition, "committed", p.committed, "first", p.first, "end", p.end)
		commits[p.topic] = append(commits[p.topic], kafkago.OffsetCommit{Partition: p.partition, Offset: p.first})
	}
	if len(commits) == 0 {
		return nil
	}
	c := l.client()
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

// partitionState is one partition's bounds and a group's committed offset there (-1: none).
type partitionState struct {
	topic                 string
	partition             int
	first, end, committed int64
}

// partitions reads every partition of the topics with the group's committed offsets.
func (l *Listener) partitions(ctx context.Context, group string, topics []string) ([]partitionState, error) {
	c := l.client()
	meta, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("metadata of %v: %w", topics, err)
	}
	ids := map[string][]int{}
	reqs := map[string][]kafkago.OffsetRequest{}
	for _, t := range meta.Topics {
		for _, p := range t.Partitions {
			ids[t.Name] = append(ids[t.Name], p.ID)
			reqs[t.Name] = append(reqs[t.Name], kafkago.FirstOffsetOf(p.ID), kafkago.LastOffsetOf(p.ID))
		}
	}
	bounds, err := c.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: reqs})
	if err != nil {
		return nil, fmt.Errorf("list offsets of %v: %w", topics, err)
	}
	committed, err := c.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: ids})
	if err != nil {
		return nil, fmt.Errorf("committed offsets of group %s: %w", group, err)
	}
	got := map[string]map[int]int64{}
	for t, ps := range committed.Topics {
		got[t] = map[int]int64{}
		for _, p := range ps {
			got[t][p.Partition] = p.CommittedOffset
		}
	}
	var out []partitionState
	for t, ps := range bounds.Topics {
		for _, p := range ps {
			off, ok := got[t][p.Partition]
			if !ok {
				off = -1
			}
			out = append(out, partitionState{topic: t, partition: p.Partition, first: p.FirstOffset, end: p.LastOffset, committed: off})
		}
	}
	return out, nil
}

// reportLag sets the per-partition lag of a group: the records between its committed offset (or
// the partition's start, before the first commit) and the partition's end.
func (l *Listener) reportLag(ctx context.Context, group string, topics []string) {
	parts, err := l.partitions(ctx, group, topics)
	if err != nil {
		l.Log.Debug("kafka lag not read", "group", group, "err", err)
		return
	}
	for _, p := range parts {
		from := p.committed
		if from < p.first {
			from = p.first
		}
		metrics.KafkaPartitionLag.WithLabelValues(group, p.topic, strconv.Itoa(p.partition)).Set(float64(max(p.end-from, 0)))
	}
}
