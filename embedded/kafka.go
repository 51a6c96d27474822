package embedded

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is an in-process Kafka-protocol broker (franz-go's kfake) that creates topics on first
// use; any Kafka client can produce to it.
type Kafka struct {
	c *kfake.Cluster
}

// StartKafka listens on addr (host:port; port 0 picks a free one). dataDir, when set, keeps the
// broker's records across restarts.
func StartKafka(addr, dataDir string, partitions int) (*Kafka, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("kafka address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return nil, fmt.Errorf("kafka address %q: %w", addr, err)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1), kfake.Ports(port), kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(partitions),
		// Lets a restarted consumer join its group quickly.
		kfake.GroupMinSessionTimeout(time.Second),
	}
	if dataDir != "" {
		opts = append(opts, kfake.DataDir(dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded kafka: %w", err)
	}
	return &Kafka{c: c}, nil
}

// Addrs are the broker addresses.
func (k *Kafka) Addrs() []string { return k.c.ListenAddrs() }

// Stop closes the broker.
func (k *Kafka) Stop() { k.c.Close() }
